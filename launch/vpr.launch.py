"""Launch the structvpr node.

    ros2 launch structvpr_ros vpr.launch.py map:=/path/to/map
    ros2 launch structvpr_ros vpr.launch.py params_file:=my.yaml image_topic:=/cam/image_raw namespace:=robot1

Arguments:
  params_file  parameters file (default: the installed config/vpr_node.yaml)
  map          map database directory (overrides map_path of the params file when given)
  checkpoint   model checkpoint (overrides checkpoint when given)
  query_checkpoint  query encoder for the map's model (overrides query_checkpoint when given)
  image_topic  camera topic (overrides image_topic when given)
  namespace    namespace of the node (topics become /<ns>/structvpr/loop_closures)

The Fast DDS profile shipped with the package (large shared-memory segment, so that raw
640x480 frames reach best-effort subscribers) is exported as FASTDDS_DEFAULT_PROFILES_FILE
unless the environment already names one. Without the launch system, run the node's console
script with the same parameters file:
    structvpr_node --ros-args --params-file config/vpr_node.yaml -p map_path:=/path/to/map
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, EqualsSubstitution, LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "structvpr_ros"
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"

# Launch arguments that override one node parameter each, only when given a non-empty value
# (an empty default must not wipe the value in the params file).
OVERRIDES = {
    "map": "map_path",
    "checkpoint": "checkpoint",
    "query_checkpoint": "query_checkpoint",
    "image_topic": "image_topic",
}


def _node(context):
    overrides = {}
    for argument, parameter in OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context)
        if value:
            overrides[parameter] = value
    params_file = LaunchConfiguration("params_file").perform(context)
    return [
        Node(
            package=PACKAGE,
            executable="structvpr_node",
            name="structvpr",
            namespace=LaunchConfiguration("namespace").perform(context),
            parameters=[params_file, overrides],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    profile = os.path.join(share, "config", "fastdds_profile.xml")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "vpr_node.yaml"),
                description="Parameters file of the structvpr node",
            ),
            DeclareLaunchArgument(
                "map", default_value="", description="Map database directory (overrides map_path of the params file)"
            ),
            DeclareLaunchArgument(
                "checkpoint", default_value="", description="Model checkpoint (overrides checkpoint of the params file)"
            ),
            DeclareLaunchArgument(
                "query_checkpoint",
                default_value="",
                description="Query encoder for the map's model (overrides query_checkpoint of the params file)",
            ),
            DeclareLaunchArgument(
                "image_topic",
                default_value="",
                description="Camera image topic (overrides image_topic of the params file)",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
            # Keep a profile the user already chose; otherwise use the one shipped for large frames.
            SetEnvironmentVariable(
                PROFILE_VARIABLE,
                profile,
                condition=IfCondition(EqualsSubstitution(EnvironmentVariable(PROFILE_VARIABLE, default_value=""), "")),
            ),
            OpaqueFunction(function=_node),
        ]
    )

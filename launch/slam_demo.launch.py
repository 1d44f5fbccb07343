"""Launch the SLAM demo: a synthetic route, structvpr in mapping mode, the pose-graph back end, RViz.

    ros2 launch structvpr_ros slam_demo.launch.py [out:=slam_demo_out] [verify:=true] [rviz:=true]

Arguments:
  out     output directory of the demo: result.json, trajectories.png, debug/ (default slam_demo_out)
  verify  geometric verification of the candidates, true or false (default true)
  rviz    start rviz2 with config/slam_demo.rviz (default false)
  device  where the structvpr node runs its model: auto, cpu or cuda (default auto)

Starts the structvpr node and structvpr_pose_graph with config/slam_demo.yaml, and the route
publisher structvpr_slam_demo, which drives the route, writes the results and, when it ends,
ends the launch. Without the launch system the same demo is `make slam-demo` (the console
script starts the two nodes itself):
    structvpr_slam_demo --out slam_demo_out [--no-verify]
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import EnvironmentVariable, EqualsSubstitution, LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "structvpr_ros"
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def _nodes(context):
    share = get_package_share_directory(PACKAGE)
    params_file = os.path.join(share, "config", "slam_demo.yaml")
    out = os.path.abspath(LaunchConfiguration("out").perform(context))
    verify = LaunchConfiguration("verify").perform(context).lower() in ("true", "1", "yes")
    device = LaunchConfiguration("device").perform(context)
    driver = Node(
        package=PACKAGE,
        executable="structvpr_slam_demo",
        name="structvpr_slam_demo",
        arguments=["--external-nodes", "--out", out, *([] if verify else ["--no-verify"])],
        output="screen",
        emulate_tty=True,
    )
    return [
        Node(
            package=PACKAGE,
            executable="structvpr_node",
            name="structvpr",
            parameters=[params_file, {"map_path": os.path.join(out, "map"), "verify": verify, "device": device}],
            output="screen",
            emulate_tty=True,
        ),
        Node(
            package=PACKAGE,
            executable="structvpr_pose_graph",
            name="structvpr_pose_graph",
            parameters=[params_file, {"require_verified": verify}],
            output="screen",
            emulate_tty=True,
        ),
        driver,
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", os.path.join(share, "config", "slam_demo.rviz")],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
        # The demo ends when the route publisher has written its results.
        RegisterEventHandler(OnProcessExit(target_action=driver, on_exit=[EmitEvent(event=Shutdown())])),
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    profile = os.path.join(share, "config", "fastdds_profile.xml")
    return LaunchDescription(
        [
            DeclareLaunchArgument("out", default_value="slam_demo_out", description="Output directory of the demo"),
            DeclareLaunchArgument(
                "verify", default_value="true", description="Geometric verification of the candidates (true/false)"
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="Start rviz2 with config/slam_demo.rviz"),
            DeclareLaunchArgument("device", default_value="auto", description="Model device: auto, cpu, cuda"),
            # Keep a profile the user already chose; otherwise use the one shipped for large frames.
            SetEnvironmentVariable(
                PROFILE_VARIABLE,
                profile,
                condition=IfCondition(EqualsSubstitution(EnvironmentVariable(PROFILE_VARIABLE, default_value=""), "")),
            ),
            OpaqueFunction(function=_nodes),
        ]
    )

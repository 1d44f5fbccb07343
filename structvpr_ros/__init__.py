"""structvpr_ros: the thin ROS 2 layer over structvpr_core.

- ``vpr_node``: the ``structvpr`` node (camera in, loop-closure candidates out).
- ``replay``: ``structvpr_replay``, a camera stand-in that publishes image folders or bags.
- ``image_conversion``: sensor_msgs Image / CompressedImage <-> BGR arrays without cv_bridge.
- ``params``: the node's parameters, their defaults and their validation.

Importing this package does not import rclpy: the pure parts (parameters, frame slot,
statistics) are usable and testable without ROS.
"""

"""StructVPR core: descriptors, training method, evaluation, map database and loop closure.

This package never imports ROS. Heavy dependencies (torch, faiss, OpenCV) are imported by the
modules that need them, so ``import structvpr_core`` stays cheap.
"""

__version__ = "0.1.0"

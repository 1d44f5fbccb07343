"""A keyframe's metadata (stamp, pose, GPS, session, image reference) and its checked dict form."""

from __future__ import annotations

from dataclasses import dataclass

from ..geometry import Pose

KEYFRAME_KEYS = frozenset({"id", "stamp", "pose", "gps", "session", "source"})


@dataclass
class Keyframe:
    id: int = 0
    stamp: float | None = None
    pose: Pose | None = None
    gps: tuple[float, float] | None = None
    session: str = "default"
    source: str = ""

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "stamp": self.stamp,
            "pose": self.pose.to_dict() if self.pose else None,
            "gps": list(self.gps) if self.gps else None,
            "session": self.session,
            "source": self.source,
        }


def as_keyframe(k: Keyframe | dict) -> Keyframe:
    """``k`` itself, or the Keyframe a dict describes; unknown keys are errors (typos would be lost).

    The id is not taken from a dict: the map assigns ids when keyframes are added.
    """
    if isinstance(k, Keyframe):
        return k
    if not isinstance(k, dict):
        raise TypeError(f"keyframe must be a Keyframe or dict, got {type(k).__name__}")
    unknown = set(k) - KEYFRAME_KEYS
    if unknown:
        raise ValueError(f"unknown keyframe key(s): {sorted(unknown)}")
    pose = k.get("pose")
    if isinstance(pose, dict):
        pose = Pose.from_dict(pose)
    gps = k.get("gps")
    stamp = k.get("stamp")
    return Keyframe(
        0,
        None if stamp is None else float(stamp),
        pose,
        None if gps is None else (float(gps[0]), float(gps[1])),
        str(k.get("session", "default")),
        str(k.get("source", "")),
    )

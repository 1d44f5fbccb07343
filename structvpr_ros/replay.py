"""``structvpr_replay``: a camera stand-in that publishes an image folder or a rosbag2's images.

    structvpr_replay --images DIR [--rate HZ] [--loop] [--compressed] [--topic T]
    structvpr_replay --bag BAG [--bag-topic T] [--rate HZ | bag timing] [--stamps original|now]

Frames go out as sensor_msgs/Image (bgr8) or, with --compressed, CompressedImage (jpeg), each
stamped (the current time by default, the recorded stamp for bags). Publishing starts once a
subscriber is matched (or after --wait-subscriber seconds). --stamps-out writes one CSV line
per published frame (index, stamp, source) so results can be joined back to the input, and
--pace-by TOPIC publishes the next frame only after the node answered the previous one (for
evaluations that must not drop frames; live cameras do not wait).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from structvpr_core.errors import StructVPRError

from .entry import print_error, run_with_rclpy

PROG = "structvpr_replay"


@dataclass
class Frame:
    image: np.ndarray  # H×W×3 uint8 BGR
    stamp: float | None  # recorded stamp (bags), None for image files
    source: str  # file path, or "<bag>#<topic>@<stamp ns>"
    frame_id: str = ""  # recorded frame_id (bags)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="structvpr_replay",
        description="Publish the images of a folder or a rosbag2 as a camera would (sensor_msgs/Image "
        "or CompressedImage), to drive the structvpr node without a camera.",
        epilog="ROS arguments may follow --ros-args (e.g. --ros-args -r __ns:=/robot). Set "
        "FASTDDS_DEFAULT_PROFILES_FILE to config/fastdds_profile.xml (install/setup.bash does) "
        "so that large raw frames reach best-effort subscribers.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, metavar="DIR", help="folder of images, published in name order")
    src.add_argument("--bag", type=Path, metavar="BAG", help="rosbag2 (sqlite3 or mcap) holding an image topic")
    p.add_argument("--bag-topic", metavar="T", help="image topic inside the bag (required with --bag)")
    p.add_argument(
        "--topic",
        default=None,
        metavar="T",
        help="output topic (default: the bag topic with --bag, else /camera/image_raw, or "
        "/camera/image_raw/compressed with --compressed)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="HZ",
        help="frames per second (default 10 for --images; the recorded timing for --bag)",
    )
    p.add_argument("--loop", action="store_true", help="start again at the end (until Ctrl-C or --count)")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N frames (0 = no limit)")
    p.add_argument("--compressed", action="store_true", help="publish sensor_msgs/CompressedImage (jpeg)")
    p.add_argument("--jpeg-quality", type=int, default=90, metavar="Q", help="jpeg quality with --compressed")
    p.add_argument("--size", metavar="WxH", help="resize frames before publishing (e.g. 640x480)")
    p.add_argument(
        "--frame-id",
        default=None,
        metavar="F",
        help="header.frame_id (default: the recorded one for bags, else camera)",
    )
    p.add_argument(
        "--stamps",
        choices=("now", "original"),
        default=None,
        help="header stamps: the publication time (now; default for --images) or the recorded "
        "stamps (original; default for --bag)",
    )
    p.add_argument(
        "--qos",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="publisher reliability (reliable reaches both kinds of subscriber; default)",
    )
    p.add_argument(
        "--wait-subscriber",
        type=float,
        default=30.0,
        metavar="S",
        help="wait up to S seconds for a subscriber before the first frame (0 = do not wait)",
    )
    p.add_argument(
        "--pace-by", metavar="TOPIC", help="after each frame wait for the LoopClosureCandidates answering it on TOPIC"
    )
    p.add_argument(
        "--pace-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="longest wait for an answer with --pace-by (then go on)",
    )
    p.add_argument(
        "--stamps-out", type=Path, metavar="CSV", help="write index,sec,nanosec,source of every published frame"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no per-run summary on stderr")
    return p


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StructVPRError(f"--size: expected WxH (e.g. 640x480), got {text!r}") from None
    if w < 1 or h < 1:
        raise StructVPRError(f"--size: width and height must be positive, got {text!r}")
    return w, h


def check_source(args) -> None:
    """StructVPRError for a missing or empty input, before anything waits on the network."""
    from structvpr_core.errors import DatasetError
    from structvpr_core.images import list_images

    if args.images is not None and not list_images(args.images):
        raise DatasetError(f"{args.images}: no images")
    if args.bag is not None and not args.bag.exists():
        raise DatasetError(f"{args.bag}: no such bag")


def frames_from_folder(folder: Path) -> Iterator[Frame]:
    from structvpr_core.images import list_images, read_image

    paths = list_images(folder)
    if not paths:
        raise StructVPRError(f"{folder}: no images")
    for path in paths:
        yield Frame(read_image(path), None, str(path))


def frames_from_bag(bag: Path, topic: str) -> Iterator[Frame]:
    from structvpr_core import bagio

    for f in bagio.read_frames(bag, topic):  # undecodable frames are skipped by bagio
        yield Frame(f.image, f.stamp, f.source, f.frame_id)


def _frames(args) -> Iterator[Frame]:
    while True:
        produced = False
        for frame in frames_from_folder(args.images) if args.images else frames_from_bag(args.bag, args.bag_topic):
            produced = True
            yield frame
        if not args.loop or not produced:
            return


class Replayer:
    """Publishes frames on a schedule; optional pacing by the node's answers."""

    def __init__(self, node, args) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.node, self.args = node, args
        if args.compressed:
            from sensor_msgs.msg import CompressedImage as MsgType
        else:
            from sensor_msgs.msg import Image as MsgType
        if args.compressed:
            import cv2  # noqa: F401  (imported now, not in the timed loop)
        rel = ReliabilityPolicy.RELIABLE if args.qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
        self.pub = node.create_publisher(MsgType, args.topic, QoSProfile(depth=5, reliability=rel))
        self._answered: set[tuple[int, int]] = set()
        if args.pace_by:
            from structvpr_msgs.msg import LoopClosureCandidates

            node.create_subscription(LoopClosureCandidates, args.pace_by, self._on_answer, 50)

    def _on_answer(self, msg) -> None:
        self._answered.add((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def _spin_until(self, done, deadline: float) -> bool:
        import rclpy

        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            rclpy.spin_once(self.node, timeout_sec=min(left, 0.05))
        return True

    def wait_for_subscriber(self) -> bool:
        if self.args.wait_subscriber <= 0:
            return True
        deadline = time.monotonic() + self.args.wait_subscriber
        ok = self._spin_until(lambda: self.pub.get_subscription_count() > 0, deadline)
        if ok:
            time.sleep(0.3)  # matching is seen here before the remote reader is fully set up
        if ok and self.args.pace_by:
            ok = self._spin_until(lambda: self.node.count_publishers(self.args.pace_by) > 0, deadline)
        return ok

    def make_msg(self, frame: Frame, stamp_sec: float):
        from std_msgs.msg import Header

        from .candidates_msg import sec_to_stamp
        from .image_conversion import bgr_to_compressed, bgr_to_image

        header = Header(stamp=sec_to_stamp(stamp_sec), frame_id=self.args.frame_id or frame.frame_id or "camera")
        if self.args.compressed:
            return bgr_to_compressed(frame.image, header, "jpeg", self.args.jpeg_quality)
        return bgr_to_image(frame.image, header)

    def run(self, frames: Iterator[Frame], size, writer=None) -> dict:
        args = self.args
        use_original = args.stamps == "original" or (args.stamps is None and args.bag is not None)
        published = unanswered = 0
        start = None
        first_stamp = prev_stamp = None
        for frame in frames:
            if args.count and published >= args.count:
                break
            if start is None:  # the schedule starts with the first frame ready to go
                start = time.monotonic()
            # Schedule: a fixed rate, the recorded timing of the bag, or (paced) no wait at all.
            if args.pace_by and not args.rate:
                due = time.monotonic()
            elif args.rate:
                due = start + published / args.rate
            elif frame.stamp is not None:
                if first_stamp is None or frame.stamp < prev_stamp:  # first frame, or the bag looped
                    start, first_stamp = time.monotonic(), frame.stamp
                prev_stamp = frame.stamp
                due = start + (frame.stamp - first_stamp)
            else:
                due = start + published / 10.0
            self._spin_until(lambda: False, due)
            if not rclpy_ok():
                break  # SIGINT / SIGTERM: rclpy shut the context down
            image = frame.image
            if size is not None and (image.shape[1], image.shape[0]) != size:
                from structvpr_core.images import resize_image

                image = resize_image(image, size)
            stamp = frame.stamp if (use_original and frame.stamp is not None) else time.time()
            msg = self.make_msg(Frame(image, frame.stamp, frame.source, frame.frame_id), stamp)
            self.pub.publish(msg)
            if writer is not None:
                writer.writerow([published, msg.header.stamp.sec, msg.header.stamp.nanosec, frame.source])
            published += 1
            if args.pace_by:
                key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
                if not self._spin_until(lambda key=key: key in self._answered, time.monotonic() + args.pace_timeout):
                    unanswered += 1
                self._answered.discard(key)
        seconds = 0.0 if start is None else time.monotonic() - start
        return {"published": published, "unanswered": unanswered, "seconds": seconds}


def rclpy_ok() -> bool:
    import rclpy

    return rclpy.ok()


def main(argv: list[str] | None = None) -> int:
    from rclpy.utilities import remove_ros_args

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(remove_ros_args(["structvpr_replay", *argv])[1:])
    if args.bag is not None and not args.bag_topic:
        print_error(PROG, "--bag needs --bag-topic (the image topic inside the bag)")
        return 2
    if args.topic is None:
        if args.bag is not None:
            args.topic = args.bag_topic
        else:
            args.topic = "/camera/image_raw/compressed" if args.compressed else "/camera/image_raw"
    if args.rate is not None and args.rate <= 0:
        print_error(PROG, "--rate must be > 0")
        return 2
    try:  # check the input before waiting for subscribers
        parse_size(args.size)
        check_source(args)
    except StructVPRError as e:
        print_error(PROG, str(e))
        return 1
    return run_with_rclpy(PROG, [PROG, *argv], lambda: replay(args))


def replay(args) -> None:
    """Publish the frames ``args`` name, on a node of its own (rclpy initialised)."""
    import rclpy

    node = rclpy.create_node(PROG)
    out = None
    try:
        size = parse_size(args.size)
        replayer = Replayer(node, args)
        if not replayer.wait_for_subscriber():
            node.get_logger().warning(
                f"no subscriber on {replayer.pub.topic_name} after {args.wait_subscriber:.0f} s; publishing anyway"
            )
        writer = None
        if args.stamps_out:
            args.stamps_out.parent.mkdir(parents=True, exist_ok=True)
            out = open(args.stamps_out, "w", newline="", encoding="utf-8")
            writer = csv.writer(out)
            writer.writerow(["index", "sec", "nanosec", "source"])
        summary = replayer.run(_frames(args), size, writer)
        if not args.quiet:
            extra = f", {summary['unanswered']} unanswered" if args.pace_by else ""
            node.get_logger().info(
                f"published {summary['published']} frames on {replayer.pub.topic_name} "
                f"in {summary['seconds']:.1f} s{extra}"
            )
        time.sleep(0.2)  # let the last reliable frame leave before the participant goes
    finally:
        if out is not None:
            out.close()
        node.destroy_node()


if __name__ == "__main__":
    sys.exit(main())

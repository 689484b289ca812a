"""Soak and lifecycle cycling of the tracker node: its own process, real DDS, figures read from /proc.

Soak (default): the node (tiny model on the CPU, seeded random weights from a checkpoint file, so it runs as with
a real one) gets --warmup-frames, then --frames frames of a synthetic clip of moving shapes, in lock-step: each
frame is published once the objects of the previous one came back (a sample lost by best-effort DDS is sent
again after RESEND_S), so every frame is processed and the figures describe the node, not the camera's rate.
Requests (services) follow a fixed schedule with a period of 100 frames: at 0 the prompts of objects 1 and 2
are re-added (MODE_ADD on a tracked id refines it) and object 3 is added, at 25 object 1 is refined with two
clicks, at 50 object 3 is removed, at 75 object 2 is replaced. The ids of every frame's objects are compared
with the ids the answers promise (`objects_lost` counts the frames where they differ; the goal is 0).

Figures of the node's process: RSS (VmRSS), threads (/proc/<pid>/task), open file descriptors (/proc/<pid>/fd)
and the Python heap (tracemalloc runs in the node's process; SIGUSR1 makes it print the traced size), at the
end of the warm-up and at the end; error counters from the node's /diagnostics.

Lifecycle cycling (--lifecycle-cycles N): the node starts unconfigured (autostart false) and goes, after one
warm-up cycle, N times through configure -> activate -> --cycle-frames frames with two objects -> deactivate -> cleanup, via the
standard lifecycle services; after each cycle its threads, fds, RSS and heap are read, and the ROS graph is
checked: one publisher per output topic and the node's services while configured, image and prompt
subscriptions while active, none of them after cleanup.

Prints JSON lines: one per --report-every frames (or per cycle), the last one the summary object
({"summary": true, "frames_sent", "frames_processed", "frames_dropped", "rss_warm_mib", "rss_end_mib",
"threads_start", "threads_end", "fds_start", "fds_end", "errors", ...}; threads_start / fds_start are read at
the end of the warm-up, once every lazily created thread exists).

    .venv/bin/python bench/soak.py [--frames 10000] [--warmup-frames 300] [--image-size 128] [--frame-size 320x240]
                                   [--report-every 1000] [--no-trace-heap]
    .venv/bin/python bench/soak.py --lifecycle-cycles 50 [--cycle-frames 5]

tests/test_node_soak.py runs the same code at CI size (1,000 frames; 10 cycles).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FASTDDS_PROFILE = REPO / "config" / "fastdds_large_images.xml"
NAMESPACE = "/soak"
MODEL = "sam2.1_hiera_tiny"
# A lost best-effort frame is published again after this many seconds without its output.
RESEND_S = 5.0
# Seconds one lock-step frame, a service answer, a transition or a graph change may take on a loaded 2-core CPU.
STEP_TIMEOUT_S = 60.0
# Frames of the synthetic clip; the soak plays it in a loop.
CLIP_FRAMES = 200
# Requests follow this period (frames); see the module docstring.
REQUEST_PERIOD = 100
# The node's output topics and services (lifecycle cycling checks each appears once, and goes with cleanup).
OUTPUT_TOPICS = ("masks", "objects", "overlay")
REQUEST_SERVICES = ("add_prompt", "remove_objects", "reset")
# The node prints this, then a JSON object, on SIGUSR1 (see `serve_node`).
HEAP_MARKER = "SOAK_HEAP "
# The goal of issue 10: RSS growth after warm-up, over 10,000 frames.
RSS_GROWTH_GOAL_MIB = 16.0


# --------------------------------------------------------------------------- the node's process


def serve_node(trace_heap: bool) -> int:
    """The node's process: `sam2_ros.main.main`; SIGUSR1 prints the traced Python heap and the Python threads.

    trace_heap: run tracemalloc (it slows the node by about a third); without it the heap reads as 0.
    The handler runs on the main thread, which only waits in `main` (never prints), and writes with one
    `os.write`, so its line never interleaves with the node's log lines.
    """
    if trace_heap:
        tracemalloc.start()

    def report(*_: Any) -> None:
        current, peak = tracemalloc.get_traced_memory()
        threads = sorted(thread.name for thread in threading.enumerate())
        line = json.dumps({"current": current, "peak": peak, "threads": threads})
        os.write(1, f"{HEAP_MARKER}{line}\n".encode())

    signal.signal(signal.SIGUSR1, report)
    from sam2_ros.main import main

    return main()


@dataclass(frozen=True)
class ProcessFigures:
    """Resources of a process, read from /proc."""

    rss_mib: float
    threads: int
    fds: int


def process_figures(pid: int) -> ProcessFigures:
    """RSS (VmRSS, MiB), thread count and open file descriptors of process `pid` (Linux)."""
    proc = Path(f"/proc/{pid}")
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
    return ProcessFigures(rss_mib=int(status["VmRSS"].split()[0]) / 1024.0, threads=int(status["Threads"]),
                          fds=len(os.listdir(proc / "fd")))


def node_environment(base: Mapping[str, str], log_dir: str) -> Dict[str, str]:
    """The node's environment: `base` plus the shipped Fast DDS profile and a log directory of its own."""
    env = dict(base)
    env.update(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE), ROS_LOG_DIR=log_dir)
    return env


class NodeProcess:
    """The tracker node in its own process (`serve_node`): its output, /proc figures and traced heap.

    Arguments:
      parameters: node parameters as ``name:=value``.
      env: the process environment (ROS domain, discovery range, Fast DDS profile).
      trace_heap: run tracemalloc in the node (`heap_mib` reads 0 without it).
      namespace: the node's namespace.
    """

    def __init__(self, parameters: Sequence[str], env: Mapping[str, str], trace_heap: bool = True,
                 namespace: str = NAMESPACE) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "serve-node",
                   *(["--trace-heap"] if trace_heap else []), "--ros-args", "-r", f"__ns:={namespace}"]
        for parameter in parameters:
            command += ["-p", parameter]
        self.proc = subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=REPO)
        self.lines: List[str] = []
        self._reports: List[Dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                if line.startswith(HEAP_MARKER):
                    self._reports.append(json.loads(line[len(HEAP_MARKER):]))
                else:
                    self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        """Whether a line containing `text` was printed within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout)

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def problems(self) -> List[str]:
        """Warning and error lines, and tracebacks."""
        with self._changed:
            return [line for line in self.lines if any(mark in line for mark in ("[WARN]", "[ERROR]", "Traceback"))]

    def figures(self) -> ProcessFigures:
        return process_figures(self.proc.pid)

    def report(self, timeout: float = 30.0) -> Dict[str, Any]:
        """The node's own report (SIGUSR1): traced Python heap `current` / `peak` (bytes), Python `threads`.

        Raises:
          TimeoutError: no report within `timeout` seconds.
        """
        with self._changed:
            seen = len(self._reports)
        os.kill(self.proc.pid, signal.SIGUSR1)
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._reports) > seen, timeout):
                raise TimeoutError("the node did not report its heap")
            return self._reports[-1]

    def heap_mib(self) -> float:
        """Python heap the node's process holds (tracemalloc's traced size), in MiB."""
        return self.report()["current"] / 2**20

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed after 30 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30.0)
        self._reader.join(timeout=10.0)
        return self.proc.returncode


def write_checkpoint(directory: Path, model: str = MODEL) -> Path:
    """Meta's checkpoint format ({'model': state_dict}) with `random_model`'s seeded weights (any image size)."""
    import torch

    from sam2_rt.weights.checkpoint import random_model

    path = directory / f"{model}.pt"
    torch.save({"model": random_model(model).state_dict()}, path)
    return path


def node_parameters(checkpoint: Path, image_size: int, autostart: bool = True) -> List[str]:
    """The soak node's parameters: CPU, the checkpoint, fast diagnostics."""
    return [f"model:={MODEL}", f"checkpoint:={checkpoint}", f"image_size:={image_size}", "device:=cpu",
            "max_objects:=8", "diagnostics_period:=0.25", f"autostart:={str(autostart).lower()}"]


# --------------------------------------------------------------------------- the DDS side


def poll(predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
    """Whether `predicate` holds within `timeout` seconds, checked every `period` (for state that has no
    callback: the ROS graph, a service future)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


class SoakClient:
    """Camera, service and lifecycle client of one node, with lean output bookkeeping (ids by frame only).

    Frame `index` is stamped ``sec = index`` so outputs are matched to frames by their header. Its executor
    spins on a background thread.
    """

    def __init__(self, context: Any, namespace: str = NAMESPACE) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from sam2_ros.msg import TrackedObjectArray
        from sam2_ros.parameters import NODE_NAME
        from sam2_ros.srv import AddPrompt, RemoveObjects

        self.namespace = namespace
        self.node_name = NODE_NAME
        self.node = Node("soak_client", namespace=namespace, context=context)
        self.camera = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        outputs = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self._changed = threading.Condition()  # notified by every subscription callback
        self.ids: Dict[int, List[int]] = {}  # frame index -> object ids, until `step` takes them
        self.latencies_ms: List[float] = []
        self.masks_received = 0
        self.bad_masks = 0
        self.overlays_received = 0
        self.diagnostics: Optional[Tuple[float, Dict[str, str]]] = None  # (receive time, the node's values)
        self._expected_size: Tuple[int, int] = (0, 0)
        self.resends = 0  # frames published again (a best-effort sample lost)
        self.node.create_subscription(TrackedObjectArray, "objects", self._on_objects, outputs)
        self.node.create_subscription(Image, "masks", self._on_mask, outputs)
        self.node.create_subscription(Image, "overlay", self._on_overlay, outputs)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        prefix = f"{namespace}/{NODE_NAME}"
        self._status_name = f"{prefix}: tracker"
        self.add_prompt = self.node.create_client(AddPrompt, f"{prefix}/add_prompt")
        self.remove = self.node.create_client(RemoveObjects, f"{prefix}/remove_objects")
        self.change_state = self.node.create_client(ChangeState, f"{prefix}/change_state")
        self.get_state = self.node.create_client(GetState, f"{prefix}/get_state")
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def close(self) -> None:
        self.executor.shutdown()
        self._spinner.join(timeout=10.0)
        self.node.destroy_node()

    def _on_objects(self, msg: Any) -> None:
        with self._changed:
            self.ids[msg.header.stamp.sec] = [obj.object_id for obj in msg.objects]
            self.latencies_ms.append(msg.latency.sec * 1e3 + msg.latency.nanosec * 1e-6)
            self._changed.notify_all()

    def _on_mask(self, msg: Any) -> None:
        with self._changed:
            self.masks_received += 1
            self.bad_masks += int((msg.height, msg.width) != self._expected_size or msg.encoding != "mono16")
            self._changed.notify_all()

    def _on_overlay(self, msg: Any) -> None:
        with self._changed:
            self.overlays_received += 1
            self._changed.notify_all()

    def _on_diagnostics(self, msg: Any) -> None:
        with self._changed:
            for status in msg.status:
                if status.name == self._status_name:
                    self.diagnostics = (time.monotonic(), {kv.key: kv.value for kv in status.values})
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Whether `predicate` (on what the subscriptions received) holds within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(predicate, max(0.0, timeout))

    # ------------------------------------------------------------------ frames

    def step(self, index: int, frame: np.ndarray) -> List[int]:
        """Publish `frame` as frame `index` and wait for its objects; returns their ids.

        Raises:
          TimeoutError: no output within STEP_TIMEOUT_S.
        """
        from std_msgs.msg import Header

        from sam2_ros.conversions import numpy_to_image

        self._expected_size = frame.shape[:2]
        msg = numpy_to_image(frame, "rgb8", Header(frame_id="soak_camera"))
        msg.header.stamp.sec = index
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            self.camera.publish(msg)
            if self.wait_for(lambda: index in self.ids, min(RESEND_S, deadline - time.monotonic())):
                with self._changed:
                    return self.ids.pop(index)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no output for frame {index} within {STEP_TIMEOUT_S} s")
            self.resends += 1

    # ------------------------------------------------------------------ services and lifecycle

    def call(self, client: Any, request: Any) -> Any:
        """Call a service and wait for the answer.

        Raises:
          TimeoutError: the service is missing or does not answer within STEP_TIMEOUT_S.
        """
        if not client.wait_for_service(timeout_sec=STEP_TIMEOUT_S):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        if not poll(future.done, STEP_TIMEOUT_S, period=0.005):
            raise TimeoutError(f"no answer from {client.srv_name}")
        return future.result()

    def transition(self, transition_id: int) -> bool:
        """Trigger a lifecycle transition (lifecycle_msgs/Transition id); whether it succeeded. A lost answer
        is told apart from a failed transition by the node's state (`testkit.lifecycle.change_state`).

        Raises:
          TimeoutError: neither an answer nor the transition's goal state within STEP_TIMEOUT_S.
        """
        from testkit.lifecycle import change_state

        return change_state(self.change_state, self.get_state, transition_id, STEP_TIMEOUT_S)

    def fresh_diagnostics(self) -> Dict[str, str]:
        """The node's first /diagnostics values received after now.

        Raises:
          TimeoutError: none within STEP_TIMEOUT_S.
        """
        now = time.monotonic()
        if not self.wait_for(lambda: self.diagnostics is not None and self.diagnostics[0] > now, STEP_TIMEOUT_S):
            raise TimeoutError("no /diagnostics from the node")
        assert self.diagnostics is not None
        return self.diagnostics[1]

    # ------------------------------------------------------------------ the graph

    def graph(self) -> Dict[str, int]:
        """Endpoints of the node as the graph shows them: publishers per output topic, subscribers of the
        camera and prompt topics, and 1 / 0 for each request service present / absent (-1: the graph does not
        list the node at this moment)."""
        counts = {f"publishers:{topic}": self.node.count_publishers(f"{self.namespace}/{topic}")
                  for topic in OUTPUT_TOPICS}
        counts.update({f"subscribers:{topic}": self.node.count_subscribers(f"{self.namespace}/{topic}")
                       for topic in ("image", "prompts")})
        prefix = f"{self.namespace}/{self.node_name}/"
        try:
            services = {name for name, _ in self.node.get_service_names_and_types_by_node(self.node_name,
                                                                                          self.namespace)}
        except RuntimeError:  # rclpy's NodeNameNonExistentError: the graph may miss the node while it updates
            counts.update({f"service:{name}": -1 for name in REQUEST_SERVICES})
            return counts
        counts.update({f"service:{name}": int(prefix + name in services) for name in REQUEST_SERVICES})
        return counts


# --------------------------------------------------------------------------- requests


@dataclass
class Requests:
    """The soak's requests and the object ids their answers promise."""

    client: SoakClient
    expected: List[int]
    sent: int = 0
    refused: int = 0

    def prompt(self, object_id: int, mode: int, points: Sequence[Tuple[float, float]] = (),
               labels: Sequence[int] = (), box: Optional[Sequence[float]] = None) -> None:
        from geometry_msgs.msg import Point32

        from sam2_ros.msg import Prompt
        from sam2_ros.srv import AddPrompt

        prompt = Prompt(object_id=object_id, mode=mode, labels=list(labels),
                        points=[Point32(x=float(x), y=float(y)) for x, y in points])
        if box is not None:
            prompt.has_box, prompt.box = True, [float(v) for v in box]
        answer = self._call(self.client.add_prompt, AddPrompt.Request(prompt=prompt))
        if answer.success and object_id not in self.expected:
            self.expected = sorted(self.expected + [object_id])

    def remove(self, object_ids: Sequence[int]) -> None:
        from sam2_ros.srv import RemoveObjects

        answer = self._call(self.client.remove, RemoveObjects.Request(object_ids=list(object_ids)))
        if answer.success:
            self.expected = sorted(answer.remaining_ids)

    def _call(self, client: Any, request: Any) -> Any:
        self.sent += 1
        answer = self.client.call(client, request)
        self.refused += int(not answer.success)
        return answer


def send_scheduled_requests(requests: Requests, index: int, boxes: np.ndarray) -> None:
    """The requests due before frame `index` >= 1 (period REQUEST_PERIOD from frame 1; boxes: (K, 4) of the
    previous frame, whose size the prompt coordinates refer to)."""
    from sam2_ros.msg import Prompt

    def centre(k: int) -> Tuple[float, float]:
        x0, y0, x1, y1 = boxes[k]
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0

    phase = (index - 1) % REQUEST_PERIOD
    if phase == 0:
        requests.prompt(1, Prompt.MODE_ADD, points=[centre(0)], labels=[1])
        requests.prompt(2, Prompt.MODE_ADD, box=boxes[1])
        requests.prompt(3, Prompt.MODE_ADD, box=boxes[2])
    elif phase == REQUEST_PERIOD // 4:
        requests.prompt(1, Prompt.MODE_REFINE, points=[centre(0), centre(3)], labels=[1, 0])
    elif phase == REQUEST_PERIOD // 2:
        requests.remove([3])
    elif phase == 3 * REQUEST_PERIOD // 4:
        requests.prompt(2, Prompt.MODE_REPLACE, box=boxes[1])


# --------------------------------------------------------------------------- soak


def machine() -> str:
    """CPU model and core count of this machine."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()}-core {model}"


def error_counts(diagnostics: Mapping[str, str]) -> Dict[str, int]:
    """The node's fault counters (resolution_changes is not one; none happen on the soak's input)."""
    from sam2_ros.worker import FAULT_COUNTERS

    return {name: int(diagnostics[name]) for name in FAULT_COUNTERS}


def run_soak(node: NodeProcess, client: SoakClient, frames: int, warmup_frames: int,
             frame_size: Tuple[int, int], report_every: int, emit: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """Drive an active node with a warm-up and `frames` lock-step frames, with the scheduled requests.

    Arguments:
      node, client: the node's process and the DDS client of it.
      frames: frames measured after the warm-up.
      warmup_frames: frames before the start figures are read.
      frame_size: (W, H) of the camera frames.
      report_every: emit a progress line every this many measured frames.
      emit: receives the progress lines.
    Returns:
      The summary (see the module docstring).
    """
    from sam2_rt.io.synthetic import SyntheticClip

    width, height = frame_size
    clip = SyntheticClip(height, width)
    requests = Requests(client, expected=[])
    objects_lost = 0
    started = time.monotonic()
    client.step(0, clip.frame(0))  # the node learns the image size: prompts refer to it
    index = 0

    def next_frame() -> List[int]:
        nonlocal index, objects_lost
        index += 1
        send_scheduled_requests(requests, index, clip.boxes((index - 1) % CLIP_FRAMES))
        ids = client.step(index, clip.frame(index % CLIP_FRAMES))
        objects_lost += int(ids != requests.expected)
        return ids

    while index < warmup_frames:
        next_frame()
    warm, heap_warm, measured_start = node.figures(), node.heap_mib(), time.monotonic()
    for measured in range(1, frames + 1):
        ids = next_frame()
        if measured % report_every == 0:
            now = node.figures()
            emit({"frame": measured, "rss_mib": round(now.rss_mib, 1), "threads": now.threads,
                  "fds": now.fds, "heap_mib": round(node.heap_mib(), 2), "objects": ids})
    measured_s = time.monotonic() - measured_start
    end, heap_end = node.figures(), node.heap_mib()
    diagnostics = client.fresh_diagnostics()
    # The last frame's masks and overlay travel on their own topics: they may arrive after its objects.
    client.wait_for(lambda: client.masks_received == client.overlays_received == int(diagnostics["frames_processed"]),
                    STEP_TIMEOUT_S)
    errors = error_counts(diagnostics)
    latencies = np.asarray(client.latencies_ms)
    return {
        "summary": True,
        "mode": "soak",
        "frames_sent": warmup_frames + frames + 1 + client.resends,
        "resends": client.resends,
        "warmup_frames": warmup_frames,
        "measured_frames": frames,
        "frames_received": int(diagnostics["frames_received"]),
        "frames_processed": int(diagnostics["frames_processed"]),
        "frames_dropped": int(diagnostics["frames_dropped"]),
        "outputs_received": len(client.latencies_ms),
        "masks_received": client.masks_received,
        "bad_masks": client.bad_masks,
        "overlays_received": client.overlays_received,
        "requests": requests.sent,
        "requests_refused": requests.refused,
        "objects_lost": objects_lost,
        "rss_warm_mib": round(warm.rss_mib, 1),
        "rss_end_mib": round(end.rss_mib, 1),
        "rss_growth_mib": round(end.rss_mib - warm.rss_mib, 1),
        "heap_warm_mib": round(heap_warm, 2),
        "heap_end_mib": round(heap_end, 2),
        "heap_growth_mib": round(heap_end - heap_warm, 3),
        "threads_start": warm.threads,
        "threads_end": end.threads,
        "fds_start": warm.fds,
        "fds_end": end.fds,
        "errors": sum(errors.values()) + requests.refused,
        "errors_by_kind": errors,
        "log_problems": len(node.problems()),
        "latency_ms_median": round(float(np.median(latencies)), 1),
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1),
        "frames_per_s": round(frames / measured_s, 2),
        "duration_s": round(time.monotonic() - started, 1),
        "frame_size": f"{width}x{height}",
        "machine": machine(),
    }


def goal_met(summary: Mapping[str, Any]) -> bool:
    """Issue 10's goal: RSS growth <= 16 MiB after warm-up, threads and fds constant, no errors, nothing lost."""
    return (summary["rss_end_mib"] - summary["rss_warm_mib"] <= RSS_GROWTH_GOAL_MIB
            and summary["threads_end"] == summary["threads_start"] and summary["fds_end"] == summary["fds_start"]
            and summary["errors"] == 0 and summary["objects_lost"] == 0)


# --------------------------------------------------------------------------- lifecycle cycling


@dataclass(frozen=True)
class CycleFigures:
    """One lifecycle cycle: the node's resources after cleanup, and the graph problems seen on the way."""

    cycle: int
    rss_mib: float
    rss_active_mib: float
    threads: int
    fds: int
    heap_mib: float
    python_threads: Tuple[str, ...]
    objects_lost: int
    graph_problems: Tuple[str, ...]


def _graph_problems(client: SoakClient, expected: Mapping[str, int], when: str) -> List[str]:
    """Wait until the graph shows `expected` (discovery is asynchronous); the differences that remain."""
    poll(lambda: all(client.graph()[key] == value for key, value in expected.items()), STEP_TIMEOUT_S)
    graph = client.graph()
    return [f"{when}: {key} = {graph[key]}, expected {value}" for key, value in expected.items() if graph[key] != value]


def _endpoints(configured: bool, active: bool) -> Dict[str, int]:
    counts = {f"publishers:{topic}": int(configured) for topic in OUTPUT_TOPICS}
    counts.update({f"subscribers:{topic}": int(active) for topic in ("image", "prompts")})
    counts.update({f"service:{name}": int(configured) for name in REQUEST_SERVICES})
    return counts


def run_cycle(node: NodeProcess, client: SoakClient, cycle: int, frames: int,
              frame_size: Tuple[int, int]) -> CycleFigures:
    """configure -> activate -> `frames` frames with objects 1 and 2 -> deactivate -> cleanup, from unconfigured.

    Raises:
      RuntimeError: a transition failed.
    """
    from lifecycle_msgs.msg import Transition

    from sam2_rt.io.synthetic import SyntheticClip
    from sam2_ros.msg import Prompt

    width, height = frame_size
    clip = SyntheticClip(height, width)
    problems: List[str] = []
    for transition, label, configured, active in (
        (Transition.TRANSITION_CONFIGURE, "configure", True, False),
        (Transition.TRANSITION_ACTIVATE, "activate", True, True),
    ):
        if not client.transition(transition):
            raise RuntimeError(f"cycle {cycle}: {label} failed:\n" + "\n".join(node.lines[-20:]))
        problems += _graph_problems(client, _endpoints(configured, active), f"cycle {cycle} after {label}")
    base = 1_000 * cycle  # unique frame stamps across cycles
    client.step(base, clip.frame(0))
    requests = Requests(client, expected=[])
    requests.prompt(1, Prompt.MODE_ADD, points=[tuple(clip.centers(0)[0])], labels=[1])
    requests.prompt(2, Prompt.MODE_ADD, box=clip.boxes(0)[1])
    objects_lost = sum(client.step(base + k, clip.frame(k)) != requests.expected for k in range(1, frames))
    objects_lost += int(requests.expected != [1, 2])
    rss_active = node.figures().rss_mib
    for transition, label, configured in ((Transition.TRANSITION_DEACTIVATE, "deactivate", True),
                                          (Transition.TRANSITION_CLEANUP, "cleanup", False)):
        if not client.transition(transition):
            raise RuntimeError(f"cycle {cycle}: {label} failed:\n" + "\n".join(node.lines[-20:]))
        problems += _graph_problems(client, _endpoints(configured, False), f"cycle {cycle} after {label}")
    after, report = node.figures(), node.report()
    return CycleFigures(cycle=cycle, rss_mib=round(after.rss_mib, 1), rss_active_mib=round(rss_active, 1),
                        threads=after.threads, fds=after.fds, heap_mib=round(report["current"] / 2**20, 2),
                        python_threads=tuple(report["threads"]), objects_lost=objects_lost,
                        graph_problems=tuple(problems))


def run_lifecycle_cycles(node: NodeProcess, client: SoakClient, cycles: int, frames: int,
                         frame_size: Tuple[int, int], emit: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """A warm-up cycle, then `cycles` measured lifecycle cycles of an unconfigured node (`run_cycle`).

    Returns the summary: the figures of every measured cycle (lists, first one first), the
    node's figures before the first cycle, and the objects lost and graph problems of all cycles (none expected).

    Raises:
      RuntimeError: a transition failed.
    """
    before = node.figures()
    results: List[CycleFigures] = []
    warmup = 1
    results.append(run_cycle(node, client, warmup, frames, frame_size))
    emit({"warmup": True, **asdict(results[-1])})
    for cycle in range(warmup + 1, warmup + cycles + 1):
        results.append(run_cycle(node, client, cycle, frames, frame_size))
        emit(asdict(results[-1]))
    measured = results[warmup:]
    return {
        "summary": True,
        "mode": "lifecycle",
        "cycles": cycles,
        "warmup_cycles": warmup,
        "frames_per_cycle": frames,
        "before": asdict(before),
        "threads": [r.threads for r in measured],
        "fds": [r.fds for r in measured],
        "rss_mib": [r.rss_mib for r in measured],
        "rss_active_mib": [r.rss_active_mib for r in measured],
        "heap_mib": [r.heap_mib for r in measured],
        "python_threads": [list(r.python_threads) for r in measured],
        "objects_lost": sum(r.objects_lost for r in results),
        "graph_problems": [problem for r in results for problem in r.graph_problems],
        "log_problems": len(node.problems()),
        "machine": machine(),
    }


# --------------------------------------------------------------------------- running it


@contextmanager
def soak_setup(context: Any, env: Mapping[str, str], image_size: int, autostart: bool, trace_heap: bool = True
               ) -> Iterator[Tuple[NodeProcess, SoakClient]]:
    """A node process (with a checkpoint of seeded random weights in a temporary folder) and its client.

    The node is active when `autostart`, else unconfigured; `trace_heap` runs tracemalloc in it. Both are
    ended on exit.
    """
    with tempfile.TemporaryDirectory(prefix="sam2_soak_") as folder:
        checkpoint = write_checkpoint(Path(folder))
        node = NodeProcess(node_parameters(checkpoint, image_size, autostart), node_environment(env, folder),
                           trace_heap)
        client: Optional[SoakClient] = None
        try:
            if autostart and not node.wait_for("activated:", timeout=180.0):
                raise RuntimeError("the node did not activate:\n" + "\n".join(node.lines[-40:]))
            client = SoakClient(context)
            if not autostart and not client.change_state.wait_for_service(timeout_sec=180.0):
                raise RuntimeError("the node's lifecycle services did not appear:\n" + "\n".join(node.lines[-40:]))
            yield node, client
        except BaseException:
            node.stop()
            logging.getLogger(__name__).error("the node's last output lines:\n%s", "\n".join(node.lines[-60:]))
            raise
        finally:
            if client is not None:
                client.close()
            node.stop()


def parse_size(text: str) -> Tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000, help="frames measured after the warm-up")
    parser.add_argument("--warmup-frames", type=int, default=300, help="frames before the start figures")
    parser.add_argument("--image-size", type=int, default=128, help="the node's model input side (image_size)")
    parser.add_argument("--frame-size", type=parse_size, default=(320, 240), help="camera frames, WIDTHxHEIGHT")
    parser.add_argument("--report-every", type=int, default=1000, help="frames between progress lines")
    parser.add_argument("--lifecycle-cycles", type=int, default=0,
                        help="run N lifecycle cycles instead of the soak")
    parser.add_argument("--cycle-frames", type=int, default=5, help="frames per lifecycle cycle")
    parser.add_argument("--no-trace-heap", dest="trace_heap", action="store_false",
                        help="no tracemalloc in the node (a third faster; heap figures read 0)")
    options = parser.parse_args(argv)

    # Private, local DDS (as the tests run it); set before rclpy loads.
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    import rclpy
    from rclpy.context import Context

    def emit(line: Dict[str, Any]) -> None:
        print(json.dumps(line), flush=True)

    context = Context()
    rclpy.init(context=context)
    try:
        cycling = options.lifecycle_cycles > 0
        with soak_setup(context, os.environ, options.image_size, not cycling, options.trace_heap) as (node, client):
            if cycling:
                summary = run_lifecycle_cycles(node, client, options.lifecycle_cycles, options.cycle_frames,
                                               options.frame_size, emit)
            else:
                summary = run_soak(node, client, options.frames, options.warmup_frames, options.frame_size,
                                   options.report_every, emit)
                summary["goal_met"] = goal_met(summary)
            summary["image_size"] = options.image_size
        emit(summary)
    finally:
        context.try_shutdown()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve-node"]:
        raise SystemExit(serve_node(trace_heap=sys.argv[2:3] == ["--trace-heap"]))
    raise SystemExit(main())

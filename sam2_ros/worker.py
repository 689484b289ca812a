"""Between the image callbacks and the model: latest-frame slots, the worker threads, and the node's figures.

The image callbacks only put a message into its camera's one-slot buffer (a frame still waiting there is
dropped and counted): they never block, and the latency stays bounded when cameras are faster than the model.

One worker thread (the node's choice on a GPU) takes, each round, the newest waiting frame of every camera that
has one and hands them to the node's `process` function together. Every camera with a frame waiting is served
in every round, so no camera starves and none waits behind another for more than one round.

With several worker threads (CPU only, see the node's `worker_threads`), each round of a thread takes at most
its share of the cameras (ceil(cameras / threads)), those waiting and not held by another thread, least
recently served first (round-robin); a camera is held by one thread from `take` to `release`, so its frames are
tracked one at a time and in order, while the other threads track the other cameras. How many threads, and how
many torch threads each, is decided here too (`choose_worker_threads`, `resolve_cpu_threads`).
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Generic, Iterable, List, Mapping, Optional, Set, Tuple, TypeVar

import numpy as np

Item = TypeVar("Item")

# Seconds of history behind the rate and latency figures of /diagnostics.
STATS_WINDOW_S = 5.0
# Default seconds of history behind the diagnostics level (parameter diagnostics_window): inputs rejected within
# it make the status WARN.
ERROR_WINDOW_S = 10.0
# Most processed frames and errors remembered for those windows (bounds memory at any frame rate).
HISTORY_LIMIT = 4096
# Seconds `FrameWorker.stop` waits for the steps in progress: a step that takes longer is reported as stuck
# (WorkerStuckError) and left behind, so deactivate, the services and SIGTERM never wait for it. A step at
# 1024 px on a 2-core CPU takes a few seconds; the first TensorRT build without warm-up, minutes.
STOP_TIMEOUT_S = 30.0

# Error counters reported in /diagnostics.
IMAGES_REJECTED = "images_rejected"  # malformed or undecodable images
PROMPTS_REJECTED = "prompts_rejected"  # invalid prompts (topic and service)
REQUESTS_REJECTED = "requests_rejected"  # service requests that cannot be served (unknown ids, cameras, inactive)
WORKER_ERRORS = "worker_errors"  # unexpected exceptions while tracking or publishing
RESOLUTION_CHANGES = "resolution_changes"  # input size changed mid-stream (tracking continues; not an error)
ERROR_COUNTERS = (IMAGES_REJECTED, PROMPTS_REJECTED, REQUESTS_REJECTED, WORKER_ERRORS, RESOLUTION_CHANGES)
# The counters that are faults of the inputs or of the node (they make the diagnostics level WARN).
FAULT_COUNTERS = (IMAGES_REJECTED, PROMPTS_REJECTED, REQUESTS_REJECTED, WORKER_ERRORS)
# Counters of the detection-association policy (sam2_ros.detections): decisions and timing of detector input.
DETECTION_EVENTS = ("detections_received", "detections_started", "detections_reacquired", "detections_refreshed", "detections_ignored",
                    "detections_removed", "detections_late", "detections_dropped")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_cpu_threads(requested: int, cores: Optional[int] = None, worker_threads: int = 1) -> int:
    """Threads for torch's CPU kernels (each worker thread runs its own): `requested`, or for 0 all cores but
    one, shared among the worker threads (at least one each)."""
    if requested > 0:
        return requested
    if cores is None:
        cores = available_cores()
    return max(1, (cores - 1) // worker_threads)


def choose_worker_threads(requested: int, cameras: int, device_type: str, backend: str,
                          cores: Optional[int] = None) -> Tuple[int, str]:
    """How many threads run the model (parameter worker_threads), and why: (threads, reason).

    0 = auto: on a CPU with the eager backend, one thread per camera up to the cores. Measured on 2 cores with
    4 cameras (bench/RESULTS.md, "Worker threads"): 2 threads with 1 torch thread each processed 1.03-1.09x the
    frames/s of 4 single-camera nodes, one thread (one batched step) 0.69x with 1 torch thread and 0.88x with 2:
    torch's intra-op threads are too fine-grained at these sizes and stall when another thread takes a core.
    On a GPU one batched step of every camera is the best use of the device, and compiled graphs and TensorRT
    engines run one step at a time: 1. An explicit count gets at most one thread per camera; more than one
    needs the eager backend (else 1).
    """
    if requested == 0:
        if device_type != "cpu" or backend != "eager":
            return 1, f"auto: 1 on {device_type} with backend {backend}"
        if cores is None:
            cores = available_cores()
        return max(1, min(cameras, cores)), f"auto: one per camera, at most one per core ({cores})"
    threads = min(requested, cameras)
    if threads > 1 and backend != "eager":
        return 1, f"worker_threads {requested} needs backend eager (backend {backend} runs one step at a time)"
    if threads < requested:
        return threads, f"worker_threads {requested}, at most one per camera"
    return threads, f"worker_threads {requested}"


class LatestFrames(Generic[Item]):
    """One slot per camera: a new frame replaces the one still waiting there.

    `put` never blocks. `take` blocks until a camera that is not held has a frame (or the slots are closed, then
    it returns None) and takes the frames of such cameras (at most `limit` of them, least recently served
    first), holding those cameras until `release`: a held camera's new frames wait in its slot.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._items: Dict[str, Item] = {}
        self._held: Set[str] = set()
        self._served: Dict[str, int] = {}  # camera -> number of the take that last served it
        self._takes = 0
        self._closed = False

    def put(self, camera: str, item: Item) -> bool:
        """Store `item` as `camera`'s newest frame; True when it replaced one not taken yet (a dropped frame)."""
        with self._condition:
            dropped = camera in self._items
            self._items[camera] = item
            self._condition.notify()
        return dropped

    def take(self, limit: Optional[int] = None) -> Optional[Dict[str, Item]]:
        """The newest frame of every camera that has one and is not held, at most `limit` cameras (None: all),
        least recently served first; they are removed from the slots and their cameras held until `release`.
        None once closed."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        with self._condition:
            while not self._closed and not (waiting := [name for name in self._items if name not in self._held]):
                self._condition.wait()
            if self._closed:
                return None
            waiting.sort(key=lambda name: self._served.get(name, -1))  # stable: arrival order among equals
            self._takes += 1
            items: Dict[str, Item] = {}
            for name in waiting[:limit]:
                items[name] = self._items.pop(name)
                self._served[name] = self._takes
                self._held.add(name)
            return items

    def release(self, cameras: Iterable[str]) -> None:
        """Cameras taken by `take` are done: their next frames can be taken."""
        with self._condition:
            self._held.difference_update(cameras)
            self._condition.notify_all()

    def close(self) -> None:
        """Wake the workers for good; later `take` calls return None and frames still waiting are dropped."""
        with self._condition:
            self._closed = True
            self._items = {}
            self._condition.notify_all()


class WorkerStuckError(RuntimeError):
    """`FrameWorker.stop` gave up waiting: the message names each step still running, its cameras and for how
    long. The threads are daemons: they end when their step returns (its outputs are then dropped)."""


@dataclass(frozen=True)
class Step(Generic[Item]):
    """A round in progress on one worker thread."""

    thread: str
    frames: Mapping[str, Item]  # the round's frames, by camera
    started: float  # time.monotonic() when the round began

    @property
    def cameras(self) -> Tuple[str, ...]:
        return tuple(self.frames)


class FrameWorker(Generic[Item]):
    """The threads that run the model: `process` gets each round's frames, by camera.

    One thread (the default) serves every camera with a waiting frame in each round. With `threads` > 1, each
    thread takes at most `share` cameras per round (see LatestFrames.take); `process` is then called from
    several threads at once, never with the same camera twice at a time.
    `process` must handle its own errors; anything it raises is passed to `on_error` and the worker goes on
    (`on_error` runs on the worker thread: `current_cameras` names the cameras of the failed round).
    `describe(camera, item)` names a frame in the error of a stuck `stop`; `reason` says what chose `threads`
    (logged and in /diagnostics).
    """

    def __init__(self, process: Callable[[Dict[str, Item]], None],
                 on_error: Callable[[Exception], None], name: str = "sam2_worker",
                 threads: int = 1, share: Optional[int] = None,
                 describe: Callable[[str, Item], str] = lambda camera, item: repr(camera), reason: str = "") -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.reason = reason
        self.frames: LatestFrames[Item] = LatestFrames()
        self._process = process
        self._on_error = on_error
        self._describe = describe
        self._share = share
        self._steps: Dict[int, Step[Item]] = {}  # thread ident -> its round in progress
        self._steps_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=name if threads == 1 else f"{name}_{index}",
                                          daemon=True)
                         for index in range(threads)]

    @property
    def thread_count(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def steps(self) -> List[Step[Item]]:
        """The rounds in progress now, one per busy thread."""
        with self._steps_lock:
            return list(self._steps.values())

    def current_cameras(self) -> Tuple[str, ...]:
        """The cameras of the calling worker thread's round in progress (none outside a round)."""
        with self._steps_lock:
            step = self._steps.get(threading.get_ident())
        return step.cameras if step is not None else ()

    def stop(self, timeout_s: Optional[float] = None) -> None:
        """Close the slots and wait for the frames in progress to finish (their outputs are published).

        Waits at most `timeout_s` (None: STOP_TIMEOUT_S) in all; raises WorkerStuckError naming the steps still
        running then.
        """
        if timeout_s is None:
            timeout_s = STOP_TIMEOUT_S
        self.frames.close()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = {thread.ident for thread in self._threads
                 if thread.is_alive() and thread is not threading.current_thread()}
        if stuck:
            now = time.monotonic()
            with self._steps_lock:
                steps = [step for ident, step in self._steps.items() if ident in stuck]
            listed = "; ".join(f"{step.thread}: the step of {self._describe_round(step.frames)}, running for "
                               f"{now - step.started:.1f} s" for step in steps) or "between two rounds"
            raise WorkerStuckError(f"{len(stuck)} worker thread(s) still busy after {timeout_s:g} s ({listed}); "
                                   "left behind, their outputs will be dropped")

    def _describe_round(self, frames: Mapping[str, Item]) -> str:
        return ", ".join(self._describe(camera, item) for camera, item in frames.items())

    def _run(self) -> None:
        ident, name = threading.get_ident(), threading.current_thread().name
        while (frames := self.frames.take(self._share)) is not None:
            with self._steps_lock:
                self._steps[ident] = Step(name, frames, time.monotonic())
            try:
                self._process(frames)
            except Exception as err:  # noqa: BLE001 - the worker must survive anything one frame raises
                self._on_error(err)
            finally:
                with self._steps_lock:
                    del self._steps[ident]
                self.frames.release(frames)


class NodeStats:
    """Frame counters, error counters and sliding windows of latencies and errors (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.errors: Dict[str, int] = {name: 0 for name in ERROR_COUNTERS}
        self.events: Dict[str, int] = {name: 0 for name in DETECTION_EVENTS}
        # (clock seconds at publication, latency in seconds) of recently processed frames
        self._recent: Deque[Tuple[float, float]] = deque(maxlen=HISTORY_LIMIT)
        # (clock seconds, counter) of recent errors
        self._recent_errors: Deque[Tuple[float, str]] = deque(maxlen=HISTORY_LIMIT)

    def received(self, dropped: bool) -> None:
        with self._lock:
            self.frames_received += 1
            self.frames_dropped += int(dropped)

    def processed(self, latency_s: float) -> None:
        with self._lock:
            self.frames_processed += 1
            self._recent.append((self._clock(), latency_s))

    def count_error(self, name: str) -> int:
        """Add one to an error counter; returns the new total."""
        with self._lock:
            self.errors[name] += 1
            self._recent_errors.append((self._clock(), name))
            return self.errors[name]

    def count_event(self, name: str, count: int = 1) -> None:
        """Add `count` to an event counter (DETECTION_EVENTS)."""
        with self._lock:
            self.events[name] += count

    def recent_faults(self, window_s: float = ERROR_WINDOW_S) -> Dict[str, int]:
        """Faults (FAULT_COUNTERS) counted within the last `window_s` seconds, by counter (non-zero only)."""
        with self._lock:
            since = self._clock() - window_s
            counts: Dict[str, int] = {}
            for moment, name in self._recent_errors:
                if moment >= since and name in FAULT_COUNTERS:
                    counts[name] = counts.get(name, 0) + 1
            return counts

    def snapshot(self) -> Dict[str, float]:
        """Totals plus rate (Hz) and latency (ms, mean / max) over the last STATS_WINDOW_S seconds."""
        with self._lock:
            since = self._clock() - STATS_WINDOW_S
            latencies = [latency for moment, latency in self._recent if moment >= since]
            return {
                "frames_received": self.frames_received,
                "frames_processed": self.frames_processed,
                "frames_dropped": self.frames_dropped,
                "rate_hz": len(latencies) / STATS_WINDOW_S,
                "latency_ms_mean": 1000.0 * float(np.mean(latencies)) if latencies else 0.0,
                "latency_ms_max": 1000.0 * max(latencies) if latencies else 0.0,
                **self.errors,
                **self.events,
            }


def total_snapshot(snapshots: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
    """The node's totals over its cameras' snapshots (sums; latency mean weighted by rate, max of maxima)."""
    keys: List[str] = list(next(iter(snapshots.values())).keys()) if snapshots else []
    total = {key: sum(s[key] for s in snapshots.values()) for key in keys}
    rate = total.get("rate_hz", 0.0)
    if snapshots:
        total["latency_ms_mean"] = (
            sum(s["latency_ms_mean"] * s["rate_hz"] for s in snapshots.values()) / rate if rate else 0.0
        )
        total["latency_ms_max"] = max(s["latency_ms_max"] for s in snapshots.values())
    return total

"""The SAM 2 tracker node: cameras in, prompts in, label images + objects (+ overlay, detections) out.

Run it as ``ros2 run sam2_ros tracker_node`` (ROS install) or ``sam2-ros-tracker`` (pip venv), both with the
usual ``--ros-args`` (``-p image_size:=512``, ``-r image:=/camera/image_raw``, ``--params-file``...), or with
``ros2 launch sam2_ros tracker.launch.py``.

This module is the lifecycle wiring; its parts live beside it: `parameters` (the parameter table and its
validation), `requests` (prompt / remove / reset requests, validated and answered at once, applied on the next
frame), `worker` (latest-frame slots, the worker thread, statistics), `outputs` and `overlay` (messages).

One model serves every camera of the `cameras` parameter (default: one camera with the plain topic names).
Threads: one single-threaded executor runs the callbacks; ONE worker thread runs the model (on a GPU; on a
CPU `worker_threads` auto runs one per camera up to the cores, see below). Image
callbacks only put the message into their camera's one-slot buffer (`sam2_ros.worker`). Each round, the worker
takes the newest frame of every camera that has one and tracks them in ONE batched step (`Tracker.step_many`:
one image-encoder batch, the objects of all cameras together); an image that cannot be decoded leaves only its
camera out, and a failing batch is retried camera by camera. With N > 1 worker threads (eager backend; for
CPUs), N worker threads each take up to ceil(cameras / N) of the waiting cameras per round, least recently
served first, and track them in their own batched step, beside the others. Services, the prompt topics and
/diagnostics never wait for a model step. Every output carries the INPUT image's header.

Lifecycle (``rclpy.lifecycle``): configure validates the parameters and creates each camera's publishers and
the services; activate loads the model (refused without a checkpoint unless ``allow_random_weights``) and
subscribes; deactivate unsubscribes, stops the worker and frees the model and the tracked objects; cleanup
removes publishers and services; ``autostart`` runs configure + activate on start.

Errors (malformed images, invalid prompts, unknown ids or cameras, anything raised while tracking) are counted
per kind and logged at most once per kind and camera every few seconds; the node keeps running and keeps the
objects it tracks. SIGINT / SIGTERM stop the worker first, then the ROS context: exit code 0 (1 when the
executor's thread died of an exception, or a model step did not finish in time: respawn sees a crash).
"""
from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import signal
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from sam2_ros.compat import add_parameter_callbacks, rclpy_session
from sam2_ros.detections import PendingDetections, detections_from_array, detections_from_vision, stamp_ns
from sam2_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb, numpy_to_image
from sam2_ros.msg import DetectionArray, Prompt, TrackedObjectArray
from sam2_ros.outputs import Detection2DArray, FrameOutputs, detections_message, mask_message, objects_message
from sam2_ros.overlay import draw_overlay
from sam2_ros.parameters import APPLIES, NODE_NAME, PARAMETER_SPECS, PARAMETERS, NodeSettings, parameter_problem
from sam2_ros.requests import MAX_QUEUED_REQUESTS, RESET_MESSAGE, ObjectBook, PromptRequest, QueuedPrompt, QueuedRemoval, QueuedRequest, apply_requests, removal_message
from sam2_ros.srv import AddPrompt, RemoveObjects, Reset
from sam2_ros.worker import (
    IMAGES_REJECTED,
    PROMPTS_REJECTED,
    REQUESTS_REJECTED,
    RESOLUTION_CHANGES,
    WORKER_ERRORS,
    FrameWorker,
    NodeStats,
    WorkerStuckError,
    total_snapshot,
)
from sam2_rt.association import AssociationConfig
from sam2_rt.detection_driver import DetectionDriver, started_and_removed
from sam2_rt.runtime import RANDOM_WEIGHTS_BANNER, MissingCheckpointError, build_model, resolve_checkpoint, resolve_device
from sam2_rt.tracker import StreamState, Tracker, TrackerConfig, TrackerInputError, TrackResult, check_frame

# The spinning thread retries rclpy's InvalidHandle (see `_spin`) at most this many times within
# INVALID_HANDLE_WINDOW_S: each retry is one entity destroyed while the executor collected it, which happens
# at lifecycle transitions; more means a handle stays invalid and the executor would spin hot, deaf, forever.
INVALID_HANDLE_RETRIES = 100
INVALID_HANDLE_WINDOW_S = 10.0
# Distinct failures (camera, exception type, raising line) whose traceback is logged once; past this many
# the node logs them as one line only (bounds memory however many kinds of failure there are).
TRACEBACKS_LOGGED_LIMIT = 256
# Seconds between the warnings of a node running with random weights.
RANDOM_WEIGHTS_WARNING_PERIOD_S = 5.0
# Each kind of error is logged at most once per camera in this many seconds (the counters count every one;
# the others are logged at debug level).
ERROR_LOG_PERIOD_S = 5.0
# The node spins one single-threaded executor: every callback is short (an image is stored for the worker, a
# request validated and queued, a diagnostics message built), the model runs on the worker thread. rclpy's
# MultiThreadedExecutor cost ~50-60 % of a core while images flowed and halved the frame rate on 2 cores
# (bench/RESULTS.md, "Several cameras").

# Images: keep only the newest sample (depth 1); reliability is a parameter.
_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
# Prompts must not be lost: the subscription keeps more samples than the request queue holds, so a burst that
# reaches the node fills the queue and the excess is refused with a reason rather than dropped unseen by DDS.
PROMPT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2 * MAX_QUEUED_REQUESTS,
                        reliability=ReliabilityPolicy.RELIABLE)
# Outputs: reliable (also serves best-effort subscribers), a few frames of slack for slow consumers.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
# Detector boxes: a few arrays of slack (they are matched to frames by stamp).
DETECTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Object ids travel as uint16: the association policy issues no larger one.
MAX_OBJECT_ID = 65535
# /diagnostics, as diagnostic_updater publishes it.
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)

Frame = Tuple[Union[Image, CompressedImage], float]  # (message, monotonic arrival time)


def image_qos(reliability: str) -> QoSProfile:
    """QoS of the image subscription: keep_last depth 1, volatile, reliability by name."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def camera_topic(camera: str, name: str) -> str:
    """The relative topic `name` of `camera` ("" = the plain name)."""
    return f"{camera}/{name}" if camera else name


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


def return_freed_heap_memory() -> bool:
    """Give the C heap's free memory back to the operating system (glibc's ``malloc_trim``); whether it could.

    Freed model weights otherwise stay in glibc's per-thread arenas: the node's RSS would not drop on deactivate,
    and each activation (run by whichever executor thread serves the transition) fills another arena (measured:
    +500 MiB over the first three lifecycle cycles). False where the C library has no malloc_trim (musl, macOS).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


class ActivationError(RuntimeError):
    """The node cannot activate with its current parameters (the message says what to change)."""


@dataclass
class Camera:
    """One camera of the node: its publishers (configure) and, while active, its stream and request book."""

    name: str
    publishers: Dict[str, Any]
    stats: NodeStats = field(default_factory=NodeStats)
    # While active: the requests accepted for the stream, and the stream itself (the worker's alone).
    book: Optional[ObjectBook] = None
    stream: Optional[StreamState] = None
    subscriptions: List[Any] = field(default_factory=list)
    # Detector-driven tracking: boxes waiting for their frame, and the policy (the worker's alone).
    pending_detections: PendingDetections = field(default_factory=PendingDetections)
    detector: Optional[DetectionDriver] = None

    @property
    def label(self) -> str:
        """How logs name this camera."""
        return f"camera {self.name!r}" if self.name else "camera"


@dataclass
class CameraFrame:
    """A camera's frame of one worker round, decoded, its requests applied, ready to be tracked."""

    camera: Camera
    stream: StreamState
    rgb: np.ndarray  # (H, W, 3) uint8
    header: Any  # the input image's std_msgs/Header: every output carries it
    arrival: float  # time.monotonic() when the image arrived


@dataclass
class Session:
    """What exists while the node is active: the model's tracker and the worker."""

    tracker: Tracker
    worker: FrameWorker
    description: str
    device: str
    random_weights: bool


Transition = Callable[["TrackerNode", LifecycleState], TransitionCallbackReturn]


def _logged_transition(callback: Transition) -> Transition:
    """rclpy turns an exception in a transition callback into ERROR without a word: log it first."""

    @functools.wraps(callback)
    def logged(node: "TrackerNode", state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return callback(node, state)
        except Exception:
            node.get_logger().error(f"{callback.__name__} failed:\n{traceback.format_exc()}")
            raise

    return logged


class TrackerNode(LifecycleNode):
    """Lifecycle node wrapping `sam2_rt.Tracker`: one model, one stream per camera.

    Topics (relative, remappable; `<camera>/` in front when cameras are named): subscribes `image` (or
    `image/compressed`) and `prompts`; publishes `masks`, `objects`, `overlay`, `detections` (with vision_msgs)
    and `/diagnostics`. Services (private): `~/add_prompt`, `~/remove_objects`, `~/reset`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        # torch's CPU thread count is process-wide: only the node's own process (`main`) sets it from
        # cpu_threads on activation. A node made inside another process (a test, a program embedding it) leaves
        # it to that process.
        self.sets_process_threads = False
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        add_parameter_callbacks(self, self._validate_parameters, self._apply_parameters)
        self._publish_overlay = bool(self.get_parameter("publish_overlay").value)
        self._overlay_alpha = float(self.get_parameter("overlay_alpha").value)
        self._diagnostics_window = float(self.get_parameter("diagnostics_window").value)

        self._last_error_log: Dict[Tuple[str, str], float] = {}
        self._tracebacks_logged: Set[Tuple[str, str, str]] = set()
        self._error_log_lock = threading.Lock()
        # Requests that name no camera of this node (unknown, ambiguous, or none configured): counted here.
        self._unrouted = NodeStats()
        # What /diagnostics says while the node is not active (and at which level): set by every transition.
        self._status = ""
        self._status_level = DiagnosticStatus.WARN
        self._set_status("unconfigured", f"configure and activate it: {self._lifecycle_command('configure')}, "
                                         f"then {self._lifecycle_command('activate')}")
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        # /diagnostics from the start: a node that fails to configure or activate says why for as long as it
        # stays inactive (configure re-creates the timer with the diagnostics_period of that moment).
        self._diagnostics_timer = self.create_timer(
            float(self.get_parameter("diagnostics_period").value), self._publish_diagnostics
        )
        self._request_services: List[Any] = []
        self._random_weights_timer: Optional[Any] = None
        # Created on configure, destroyed on cleanup.
        self._cameras: Dict[str, Camera] = {}
        # Set on activation, None otherwise; read once by each callback (a reference swap is atomic).
        self._session: Optional[Session] = None

    # ------------------------------------------------------------------ parameters

    def _validate_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            problem = parameter_problem(parameter.name, parameter.value)
            if problem is not None:
                return SetParametersResult(successful=False, reason=f"{parameter.name}: {problem}")
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: List[Parameter]) -> None:
        for parameter in parameters:
            if parameter.name == "publish_overlay":
                self._publish_overlay = bool(parameter.value)
            elif parameter.name == "overlay_alpha":
                self._overlay_alpha = float(parameter.value)
            elif parameter.name == "diagnostics_window":
                self._diagnostics_window = float(parameter.value)
            elif parameter.name in PARAMETER_SPECS:
                spec = PARAMETER_SPECS[parameter.name]
                self.get_logger().info(f"parameter {parameter.name} = {parameter.value!r}: {APPLIES[spec.applies]}")

    def _read_settings(self) -> NodeSettings:
        """The activation parameters; ActivationError names the first invalid one."""
        values = {name: self.get_parameter(name).value for name in NodeSettings.__dataclass_fields__}
        for name, value in values.items():
            problem = parameter_problem(name, value)
            if problem is not None:
                raise ActivationError(f"invalid parameter {name}: {problem}")
        return NodeSettings(**values)

    # ------------------------------------------------------------------ lifecycle

    def _lifecycle_command(self, transition: str) -> str:
        return f"`ros2 lifecycle set {self.get_fully_qualified_name()} {transition}`"

    def _set_status(self, state: str, fix: str = "", level: bytes = DiagnosticStatus.WARN) -> None:
        """The state /diagnostics reports while the node is not active: what happened, and what to do next."""
        self._status = f"{state}; {fix}" if fix else state
        self._status_level = level

    def start(self) -> bool:
        """Configure and activate (the `autostart` path); returns whether the node is active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        problems = [
            f"{name}: {problem}"
            for name in PARAMETER_SPECS
            if (problem := parameter_problem(name, self.get_parameter(name).value)) is not None
        ]
        if problems:
            self._set_status("configure failed: invalid parameters: " + "; ".join(problems),
                             f"set valid values (`ros2 param set {self.get_fully_qualified_name()} NAME VALUE`), "
                             f"then {self._lifecycle_command('configure')}", DiagnosticStatus.ERROR)
            self.get_logger().error(self._status)
            return TransitionCallbackReturn.FAILURE
        self._cameras = {name: Camera(name, self._create_publishers(name))
                         for name in self.get_parameter("cameras").value}
        self._request_services = [
            self.create_service(AddPrompt, "~/add_prompt", self._on_add_prompt),
            self.create_service(RemoveObjects, "~/remove_objects", self._on_remove_objects),
            self.create_service(Reset, "~/reset", self._on_reset),
        ]
        self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(
            float(self.get_parameter("diagnostics_period").value), self._publish_diagnostics
        )
        self._set_status("configured (inactive)", f"activate it: {self._lifecycle_command('activate')}")
        self.get_logger().info(f"configured: {len(self._cameras)} camera(s)")
        return super().on_configure(state)

    def _create_publishers(self, camera: str) -> Dict[str, Any]:
        publishers = {
            "masks": self.create_lifecycle_publisher(Image, camera_topic(camera, "masks"), OUTPUT_QOS),
            "objects": self.create_lifecycle_publisher(TrackedObjectArray, camera_topic(camera, "objects"), OUTPUT_QOS),
            "overlay": self.create_lifecycle_publisher(Image, camera_topic(camera, "overlay"), OUTPUT_QOS),
        }
        if Detection2DArray is not None:
            publishers["detections"] = self.create_lifecycle_publisher(
                Detection2DArray, camera_topic(camera, "detections"), OUTPUT_QOS
            )
        return publishers

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            session, settings = self._create_session()
        except ActivationError as err:  # what to change is in the message: one line
            self._set_status(f"refusing to activate: {err}", f"then {self._lifecycle_command('activate')}",
                             DiagnosticStatus.ERROR)
            self.get_logger().error(self._status)
            return TransitionCallbackReturn.FAILURE
        except Exception as err:  # noqa: BLE001 - any load failure must leave the node inactive with a reason
            self._set_status(f"refusing to activate: {type(err).__name__}: {err}",
                             f"see the traceback in the node's log; then {self._lifecycle_command('activate')}",
                             DiagnosticStatus.ERROR)
            self.get_logger().error(f"{self._status}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE
        association = AssociationConfig(
            iou_threshold=settings.detection_iou_threshold, score_threshold=settings.detection_min_score,
            reacquire_max_distance=settings.detection_reacquire_distance,
            reacquire_occluded_after_frames=settings.detection_reacquire_after_frames,
            refresh_every_n_frames=settings.detection_refresh_frames,
            remove_lost_after_frames=settings.detection_remove_lost_frames,
            max_objects=settings.max_objects, max_object_id=MAX_OBJECT_ID,
        )
        for camera in self._cameras.values():
            camera.stats = NodeStats()
            camera.book = ObjectBook(session.tracker)
            camera.stream = session.tracker.create_stream()
            camera.pending_detections = PendingDetections()
            camera.detector = DetectionDriver(association)
        self._unrouted = NodeStats()
        self._session = session
        session.worker.start()
        for camera in self._cameras.values():
            camera.subscriptions = self._subscribe(camera, settings)
        result = super().on_activate(state)
        if session.random_weights:
            self._warn_random_weights()
            self._random_weights_timer = self.create_timer(RANDOM_WEIGHTS_WARNING_PERIOD_S, self._warn_random_weights)
        self._set_status("active", level=DiagnosticStatus.OK)
        topics = ", ".join(camera.subscriptions[0].topic_name for camera in self._cameras.values())
        self.get_logger().info(f"activated: {session.description}; listening on {topics}")
        return result

    def _create_session(self) -> Tuple[Session, NodeSettings]:
        settings = self._read_settings()
        try:
            device = resolve_device(settings.device)
        except ValueError as err:
            raise ActivationError(str(err)) from None
        # Random weights only as a fallback: a checkpoint that exists is always used.
        random_weights = settings.allow_random_weights and resolve_checkpoint(settings.model, settings.checkpoint) is None
        try:
            model, weights = build_model(settings.model, settings.checkpoint, settings.image_size, device,
                                         random_weights)
        except MissingCheckpointError as err:
            raise ActivationError(
                f"{err}; or set the parameter 'checkpoint', or allow_random_weights:=true to run without one "
                "(demos and tests only)"
            ) from None
        # An unavailable backend falls back (tensorrt -> compile -> eager) with a warning naming the reason.
        tracker = Tracker(
            model,
            TrackerConfig(
                max_objects=settings.max_objects,
                max_conditioning_frames=settings.max_conditioning_frames,
                lost_after_frames=settings.lost_after_frames,
                precision=settings.precision,
                backend=settings.backend,
            ),
        )
        backend = tracker.backend
        worker = self._frame_worker(settings.worker_threads, backend.used, device.type)
        cpu_note = ""
        if device.type == "cpu":
            if self.sets_process_threads:
                torch.set_num_threads(resolve_cpu_threads(settings.cpu_threads, worker_threads=worker.thread_count))
            each = " each" if worker.thread_count > 1 else ""
            cpu_note = f" (torch threads: {torch.get_num_threads()}{each})"
        warmup = ""
        if settings.warmup:
            # Compiled backends build (or load) every shape now, for the frames of every camera in one batch:
            # a live stream never waits for a build.
            report = tracker.warmup(max_streams=len(self._cameras))
            warmup = f", warm-up {report.seconds:.1f} s" if report.events else ""
        description = (
            f"model {settings.model} at {settings.image_size} px on {device}{cpu_note}, {tracker.precision}"
            f"{' (auto)' if settings.precision == 'auto' else ''}, "
            f"backend {backend.used}{'' if backend.used == backend.requested else f' (asked: {backend.requested})'}"
            f"{warmup}, weights: {weights}, "
            f"{worker.thread_count} worker thread{'s' if worker.thread_count > 1 else ''} ({worker.reason})"
        )
        session = Session(tracker=tracker, description=description, device=str(device),
                          random_weights=random_weights, worker=worker)
        return session, settings

    def _frame_worker(self, worker_threads: int, backend: str, device_type: str = "cpu") -> FrameWorker:
        """The worker: `worker_threads` threads (0 = auto; see choose_worker_threads), each taking its share of
        the cameras.

        Several threads step different streams at the same time, which only the eager backend allows (a
        compiled graph or TensorRT engine runs one call at a time): any other backend gets one thread, with a
        warning when more were asked for.
        """
        threads, reason = choose_worker_threads(worker_threads, len(self._cameras), device_type, backend)
        if worker_threads > 1 and threads == 1 and backend != "eager":
            self.get_logger().warning(f"{reason}: using 1 worker thread")
        # One thread takes every waiting camera each round (share None); several take their share each.
        share = math.ceil(len(self._cameras) / threads) if threads > 1 else None
        worker: FrameWorker = FrameWorker(
            process=self._process, on_error=lambda err: self._on_worker_error(worker, err), threads=threads,
            share=share, describe=self._describe_frame, reason=reason)
        return worker

    def _describe_frame(self, name: str, frame: Frame) -> str:
        """A frame of a worker round, as a stuck step is reported: its camera and header stamp."""
        stamp = frame[0].header.stamp
        label = self._cameras[name].label if name in self._cameras else repr(name)
        return f"{label} frame stamped {stamp.sec}.{stamp.nanosec:09d}"

    def _subscribe(self, camera: Camera, settings: NodeSettings) -> List[Any]:
        qos = image_qos(settings.input_reliability)
        on_image = functools.partial(self._on_image, camera)
        if settings.use_compressed:
            image_sub = self.create_subscription(CompressedImage, camera_topic(camera.name, "image/compressed"),
                                                 on_image, qos)
        else:
            image_sub = self.create_subscription(Image, camera_topic(camera.name, "image"), on_image, qos)
        prompt_sub = self.create_subscription(Prompt, camera_topic(camera.name, "prompts"),
                                              functools.partial(self._on_prompt, camera), PROMPT_QOS)
        subscriptions = [image_sub, prompt_sub, self.create_subscription(
            DetectionArray, camera_topic(camera.name, "detection_boxes"),
            functools.partial(self._on_detections, camera, detections_from_array), DETECTION_QOS)]
        if Detection2DArray is not None:
            subscriptions.append(self.create_subscription(
                Detection2DArray, camera_topic(camera.name, "detections_in"),
                functools.partial(self._on_detections, camera, detections_from_vision), DETECTION_QOS))
        return subscriptions

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._release():
            self._set_status("deactivated (inactive)", f"activate it again: {self._lifecycle_command('activate')}")
            self.get_logger().info("deactivated: model and objects released")
        else:
            self._set_status("deactivated, but a model step is still running (its thread holds the model)",
                             "restart the node if it does not finish", DiagnosticStatus.ERROR)
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_interfaces()
        self._set_status("unconfigured", f"configure it: {self._lifecycle_command('configure')}")
        return super().on_cleanup(state)

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._destroy_interfaces()
        self._set_status("shut down")
        return super().on_shutdown(state)

    def stop(self) -> bool:
        """Stop the worker and free the model (safe in any state; call it before the ROS context shuts down).
        False when a step was still running after worker.STOP_TIMEOUT_S and was left behind (logged)."""
        return self._release()

    def _release(self) -> bool:
        """Unsubscribe, finish the frame in progress (its outputs are published), free the model and objects.

        A step that does not finish within worker.STOP_TIMEOUT_S is left behind with an error naming it (its
        camera and frame, for how long): the node goes on releasing, so deactivate, the services and SIGTERM
        are never held up by it. Returns False then (the stuck thread keeps the model until its step returns).
        """
        for camera in self._cameras.values():
            for subscription in camera.subscriptions:
                self.destroy_subscription(subscription)
            camera.subscriptions = []
        if self._random_weights_timer is not None:
            self.destroy_timer(self._random_weights_timer)
            self._random_weights_timer = None
        session, self._session = self._session, None
        if session is None:
            return True
        try:
            session.worker.stop()
            stopped = True
        except WorkerStuckError as err:
            self.get_logger().error(f"the model did not stop: {err}")
            stopped = False
        for camera in self._cameras.values():
            camera.book, camera.stream, camera.detector = None, None, None
        on_cuda = session.tracker.device.type == "cuda"
        del session  # the last reference to the model and the streams: their memory is freed here
        if on_cuda:
            torch.cuda.empty_cache()
        else:
            return_freed_heap_memory()
        return stopped

    def _destroy_interfaces(self) -> None:
        for camera in self._cameras.values():
            for publisher in camera.publishers.values():
                self.destroy_lifecycle_publisher(publisher)
        self._cameras = {}
        for service in self._request_services:
            self.destroy_service(service)
        self._request_services = []

    def _warn_random_weights(self) -> None:
        self.get_logger().warning(
            "RANDOM WEIGHTS: no checkpoint is loaded (allow_random_weights is true), the masks are MEANINGLESS. "
            "Set the parameter 'checkpoint' for real results."
        )

    # ------------------------------------------------------------------ errors

    def _report(self, camera: Camera, counter: str, message: str, err: Optional[BaseException] = None) -> None:
        """Count an error; log it unless this kind was logged for this camera within ERROR_LOG_PERIOD_S.
        With `err`, the first line logged for each distinct failure carries its traceback."""
        count = camera.stats.count_error(counter)
        self._log_limited((camera.name, counter), f"{camera.label}: {message} [{counter}: {count}]", err)

    def _log_limited(self, key: Tuple[str, str], line: str, err: Optional[BaseException] = None) -> None:
        """A warning, unless one of this (camera, kind) was logged within ERROR_LOG_PERIOD_S (then debug).

        With `err`: the warning carries the traceback the first time this failure (camera, kind, exception
        type and the line that raised it) is logged; later ones are a line each, as every other error.
        """
        now = time.monotonic()
        trace = ""
        with self._error_log_lock:  # worker threads and the executor report
            due = now - self._last_error_log.get(key, -np.inf) >= ERROR_LOG_PERIOD_S
            if due:
                self._last_error_log[key] = now
                if err is not None and err.__traceback__ is not None:
                    last = traceback.extract_tb(err.__traceback__)[-1]
                    failure = (*key, f"{type(err).__qualname__} at {last.filename}:{last.lineno}")
                    new = failure not in self._tracebacks_logged
                    if new and len(self._tracebacks_logged) < TRACEBACKS_LOGGED_LIMIT:
                        self._tracebacks_logged.add(failure)
                        trace = "\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()
        if due:
            self.get_logger().warning(line + trace)
        else:
            self.get_logger().debug(line)

    def _report_failure(self, camera: Camera, err: Exception) -> None:
        """Count and log an unexpected exception of a camera's frame (the camera keeps its objects); the first
        time this failure is logged, with its traceback."""
        self._report(camera, WORKER_ERRORS, f"frame failed: {type(err).__name__}: {err} (objects kept)", err)

    def _on_worker_error(self, worker: FrameWorker, err: Exception) -> None:
        """An exception that escaped a worker round: charged to each camera of that round (their frames are lost)."""
        cameras = [self._cameras[name] for name in worker.current_cameras() if name in self._cameras]
        for camera in cameras:
            self._report_failure(camera, err)
        if not cameras:
            self._unrouted.count_error(WORKER_ERRORS)
            self._log_limited(("", WORKER_ERRORS), f"a worker round failed: {type(err).__name__}: {err}", err)

    # ------------------------------------------------------------------ images and the worker

    def _on_image(self, camera: Camera, msg: Union[Image, CompressedImage]) -> None:
        session = self._session
        if session is not None:
            camera.stats.received(dropped=session.worker.frames.put(camera.name, (msg, time.monotonic())))

    def _process(self, frames: Dict[str, Frame]) -> None:
        """One round of the worker: decode each camera's frame and apply its queued requests, track the frames of
        all cameras in one batched step (`Tracker.step_many`), publish each camera's outputs."""
        session = self._session
        if session is None:
            return
        ready: List[CameraFrame] = []
        for name, (msg, arrival) in frames.items():
            camera = self._cameras[name]
            try:
                frame = self._prepare_camera(session.tracker, camera, msg, arrival)
            except Exception as err:  # noqa: BLE001 - one camera's failure must not stop the others
                self._report_failure(camera, err)
                continue
            if frame is not None:
                ready.append(frame)
        for frame, result in self._track(session.tracker, ready):
            try:
                self._publish_result(frame, result)
            except Exception as err:  # noqa: BLE001 - one camera's failure must not stop the others
                self._report_failure(frame.camera, err)

    def _prepare_camera(self, tracker: Tracker, camera: Camera, msg: Union[Image, CompressedImage],
                        arrival: float) -> Optional[CameraFrame]:
        """Decode a camera's frame and apply its queued requests and detections to its stream; None when the
        image is rejected (counted) or the camera is not active."""
        book, stream = camera.book, camera.stream
        if book is None or stream is None:
            return None
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
            check_frame(rgb)
        except (ImageConversionError, TrackerInputError) as err:
            self._report(camera, IMAGES_REJECTED, f"image rejected: {err}")
            return None
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        previous = book.set_frame_size(size)
        if previous is not None:
            self._report(
                camera, RESOLUTION_CHANGES,
                f"input resolution changed from {previous[1]}x{previous[0]} to {size[1]}x{size[0]}: tracking "
                f"continues with objects {book.object_ids()}",
            )
        requests = book.drain()
        for request, err in apply_requests(tracker, stream, requests):
            self._report(camera, REQUESTS_REJECTED, f"{type(request).__name__} could not be applied: {err}")
            if isinstance(request, QueuedPrompt) and request.object_id not in stream.object_ids:
                book.forget([request.object_id])
        self._associate(tracker, camera, requests, size, stamp_ns(msg.header.stamp))
        return CameraFrame(camera, stream, rgb, msg.header, arrival)

    def _track(self, tracker: Tracker, ready: List[CameraFrame]) -> List[Tuple[CameraFrame, TrackResult]]:
        """Track the round's frames in one batched step. If it fails (nothing changed then), each camera is
        stepped alone: one camera's failure, reported, costs no other camera its frame."""
        if not ready:
            return []
        try:
            return list(zip(ready, tracker.step_many([frame.stream for frame in ready], [frame.rgb for frame in ready])))
        except Exception as err:  # noqa: BLE001 - step_many is transactional: retry each camera alone
            if len(ready) == 1:
                self._report_failure(ready[0].camera, err)
                return []
            self._log_limited(("", "batch"), f"the step of {len(ready)} cameras together failed "
                                             f"({type(err).__name__}: {err}): stepping each camera alone")
        tracked = []
        for frame in ready:
            try:
                tracked.append((frame, tracker.step(frame.stream, frame.rgb)))
            except Exception as err:  # noqa: BLE001 - one camera's failure must not stop the others
                self._report_failure(frame.camera, err)
        return tracked

    def _publish_result(self, frame: CameraFrame, result: TrackResult) -> None:
        camera = frame.camera
        outputs = FrameOutputs.from_result(result)
        if camera.detector is not None:
            camera.detector.after_step(result)
            outputs = outputs.with_classes(camera.detector.labels())
        self._publish(camera, outputs, frame.rgb, frame.header, frame.arrival)

    def _associate(self, tracker: Tracker, camera: Camera, requests: Sequence[QueuedRequest],
                   size: Tuple[int, int], frame_stamp: int) -> None:
        """Run the detection-association policy on this frame's detector boxes (every frame: it keeps the
        objects' states current) and apply its decisions to the stream before the frame is tracked."""
        detector, stream, book = camera.detector, camera.stream, camera.book
        if detector is None or stream is None or book is None:
            return
        for request in requests:  # what the user changed by hand, the policy must know
            if isinstance(request, QueuedRemoval):
                detector.forget(request.object_ids)
            elif isinstance(request, QueuedPrompt):
                if request.replace:
                    detector.forget([request.object_id])
            else:
                detector.reset()
        due = camera.pending_detections.take_for(frame_stamp)
        if due.late:
            camera.stats.count_event("detections_late", due.late)
        decisions = detector.before_step(tracker, stream, due.detections or [], size, book.object_ids())
        started, removed = started_and_removed(decisions)
        book.adopt(started)
        book.forget(removed)
        for decision in decisions:
            camera.stats.count_event(f"detections_{decision.kind.value}")
            self.get_logger().debug(f"{camera.label}: {decision}")

    def _publish(self, camera: Camera, outputs: FrameOutputs, rgb: np.ndarray, header: Any, arrival: float) -> None:
        publishers = camera.publishers
        publishers["masks"].publish(mask_message(outputs, header))
        if self._publish_overlay and publishers["overlay"].get_subscription_count() > 0:
            banner = RANDOM_WEIGHTS_BANNER if self._session is not None and self._session.random_weights else None
            overlay = draw_overlay(rgb, outputs, self._overlay_alpha, banner=banner)
            publishers["overlay"].publish(numpy_to_image(overlay, "bgr8", header))
        if "detections" in publishers and publishers["detections"].get_subscription_count() > 0:
            publishers["detections"].publish(detections_message(outputs, header))
        latency = time.monotonic() - arrival
        publishers["objects"].publish(
            objects_message(outputs, header, int(latency * 1e9), camera.stats.frames_dropped)
        )
        camera.stats.processed(latency)

    # ------------------------------------------------------------------ prompts and services

    def _camera_for(self, name: str) -> Camera:
        """The camera a request names ("" = the only camera); TrackerInputError for an unknown one."""
        if name in self._cameras:
            return self._cameras[name]
        names = ", ".join(repr(n) for n in self._cameras) or "none (the node is not configured)"
        if not name:
            raise TrackerInputError(f"this node has several cameras: name one of {names}")
        raise TrackerInputError(f"unknown camera {name!r}; cameras: {names}")

    def _active_book(self, camera: Camera) -> ObjectBook:
        book = camera.book
        if self._session is None or book is None:
            raise TrackerInputError(f"the node is not active ({self._status})")
        return book

    def _on_detections(self, camera: Camera, convert: Callable[[Any], list], msg: Any) -> None:
        if self._session is None:
            return
        camera.stats.count_event("detections_received")
        if camera.pending_detections.put(stamp_ns(msg.header.stamp), convert(msg)):
            camera.stats.count_event("detections_dropped")

    def _on_prompt(self, camera: Camera, msg: Prompt) -> None:
        try:
            self.get_logger().info(self._active_book(camera).submit_prompt(PromptRequest.from_message(msg)))
        except TrackerInputError as err:
            self._report(camera, PROMPTS_REJECTED, f"prompt for object {msg.object_id} rejected: {err}")

    def _on_add_prompt(self, request: AddPrompt.Request, response: AddPrompt.Response) -> AddPrompt.Response:
        response.object_id = request.prompt.object_id
        try:
            camera = self._camera_for(request.camera)
        except TrackerInputError as err:
            return self._reject(response, REQUESTS_REJECTED, f"add_prompt rejected: {err}")
        try:
            response.message = self._active_book(camera).submit_prompt(PromptRequest.from_message(request.prompt))
            response.success = True
            self.get_logger().info(f"{camera.label}: {response.message}")
        except TrackerInputError as err:
            response.success, response.message = False, f"prompt rejected: {err}"
            self._report(camera, PROMPTS_REJECTED, f"add_prompt for object {request.prompt.object_id} rejected: {err}")
        return response

    def _on_remove_objects(
        self, request: RemoveObjects.Request, response: RemoveObjects.Response
    ) -> RemoveObjects.Response:
        ids = [int(obj_id) for obj_id in request.object_ids]
        try:
            camera = self._camera_for(request.camera)
        except TrackerInputError as err:
            return self._reject(response, REQUESTS_REJECTED, f"remove_objects {ids} rejected: {err}")
        try:
            book = self._active_book(camera)
        except TrackerInputError as err:
            return self._reject(response, REQUESTS_REJECTED, f"remove_objects {ids} rejected: {err}", camera)
        try:
            response.remaining_ids = book.submit_removal(ids)
            response.success, response.message = True, removal_message(ids)
            self.get_logger().info(f"{camera.label}: {response.message}")
        except TrackerInputError as err:
            response.success, response.message = False, str(err)
            response.remaining_ids = book.object_ids()
            self._report(camera, REQUESTS_REJECTED, f"remove_objects {ids} rejected: {err}")
        return response

    def _on_reset(self, request: Reset.Request, response: Reset.Response) -> Reset.Response:
        try:
            camera = self._camera_for(request.camera)
        except TrackerInputError as err:
            return self._reject(response, REQUESTS_REJECTED, f"reset rejected: {err}")
        try:
            self._active_book(camera).submit_reset()
        except TrackerInputError as err:
            return self._reject(response, REQUESTS_REJECTED, f"reset rejected: {err}", camera)
        response.success, response.message = True, RESET_MESSAGE
        self.get_logger().info(f"{camera.label}: reset: {response.message}")
        return response

    def _reject(self, response: Any, counter: str, message: str, camera: Optional[Camera] = None) -> Any:
        """Answer a request that cannot be served, and count it: against `camera` when the request named one of
        this node's cameras (it came while inactive), else against no camera (the node's totals only)."""
        response.success, response.message = False, message
        if camera is not None:
            self._report(camera, counter, message)
        else:
            count = self._unrouted.count_error(counter)
            self._log_limited(("", counter), f"{message} [{counter}: {count}]")
        return response

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        self._diagnostics_pub.publish(self.diagnostics())

    def diagnostics(self) -> DiagnosticArray:
        """The /diagnostics message of now: the node's status (and each camera's, when they are named)."""
        session = self._session
        snapshots = {name: camera.stats.snapshot() for name, camera in self._cameras.items()}
        faults = {name: camera.stats.recent_faults(self._diagnostics_window) for name, camera in self._cameras.items()}
        objects = {name: camera.book.object_ids() if camera.book is not None else []
                   for name, camera in self._cameras.items()}
        # The node's totals also count the requests that named no camera of it.
        total_faults = sum((Counter(counts) for counts in faults.values()),
                           Counter(self._unrouted.recent_faults(self._diagnostics_window)))
        totals = total_snapshot({**snapshots, "(no camera)": self._unrouted.snapshot()})
        statuses = [self._status_of("tracker", session, totals, dict(total_faults),
                                    [obj for ids in objects.values() for obj in ids])]
        if list(self._cameras) != [""]:
            statuses += [self._status_of(f"camera {name}", session, snapshots[name], faults[name], objects[name])
                         for name in self._cameras]
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        return array

    def _status_of(self, what: str, session: Optional[Session], figures: Dict[str, float],
                   faults: Dict[str, int], objects: List[int]) -> DiagnosticStatus:
        """One DiagnosticStatus: the level reflects the last `diagnostics_window` seconds; totals are values."""
        if session is None:
            level, message = self._status_level, self._status
        elif session.random_weights:
            level, message = DiagnosticStatus.WARN, "running with RANDOM weights: masks are meaningless"
        elif faults:
            listed = ", ".join(f"{count} {name}" for name, count in sorted(faults.items()))
            level, message = DiagnosticStatus.WARN, f"in the last {self._diagnostics_window:g} s: {listed}"
        else:
            level, message = DiagnosticStatus.OK, f"tracking {len(objects)} object(s) at {figures['rate_hz']:.1f} Hz"
        values = {name: f"{value:.2f}" if isinstance(value, float) else str(value) for name, value in figures.items()}
        values.update(objects=str(len(objects)), object_ids=" ".join(map(str, objects)), state=self._status,
                      configuration=session.description if session is not None else "",
                      worker_threads=(f"{session.worker.thread_count} ({session.worker.reason})"
                                      if session is not None else ""),
                      recent_faults=str(sum(faults.values())))
        if session is not None:
            # Graphs compiled / engines built per component: after the warm-up they never move.
            values.update({f"compilations_{name}": str(count)
                           for name, count in session.tracker.compilations.items()})
        return DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: {what}",
            message=message,
            hardware_id=session.device if session is not None else "",
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )


class _RosLogHandler(logging.Handler):
    """Forwards Python `logging` records of sam2_rt to the node's ROS logger."""

    def __init__(self, node: TrackerNode) -> None:
        super().__init__(level=logging.INFO)
        self._logger = node.get_logger().get_child("sam2_rt")

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(message)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(message)
        else:
            self._logger.info(message)


def _spin(executor: Executor, stop: threading.Event, retries: int = INVALID_HANDLE_RETRIES,
          window_s: float = INVALID_HANDLE_WINDOW_S) -> Optional[BaseException]:
    """Spin until the executor is shut down; a context shut down from outside also ends the node. Sets `stop`
    when it ends, and returns None then, or the exception that ended it (a callback's bug, ...).

    Stopping the node from the main thread (deactivate, cleanup) destroys publishers, subscriptions and
    services while the spinning thread may be collecting them for its wait set: rclpy (Humble to Kilted) then raises InvalidHandle
    in the spinning thread (ros2/rclpy#1206, #1284), which would end it and leave the node deaf. The destroyed
    entity is no longer listed by the next round, so spinning simply goes on, up to `retries` times within
    `window_s` seconds: more is a handle that stays invalid, and ends the spinning like any other error.
    """
    retried: Deque[float] = deque()
    try:
        while True:
            try:
                executor.spin()
                return None
            except InvalidHandle as err:
                now = time.monotonic()
                retried.append(now)
                while retried[0] < now - window_s:
                    retried.popleft()
                if len(retried) > retries:
                    failure = RuntimeError(f"rclpy raised InvalidHandle {len(retried)} times within {window_s:g} s "
                                           f"while spinning (last: {err}): a handle stays invalid")
                    failure.__cause__ = err
                    return failure
    except ExternalShutdownException:
        return None
    except Exception as err:  # noqa: BLE001 - reported by main, which then exits non-zero
        return err
    finally:
        stop.set()


class _ExecutorThread(threading.Thread):
    """The thread that spins the node's executor (`_spin`); `error` is what ended it, None for a clean end."""

    def __init__(self, executor: Executor, stop: threading.Event) -> None:
        super().__init__(name="sam2_executor")
        self._spun, self._stop_event = executor, stop  # threading.Thread has a _stop of its own
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        self.error = _spin(self._spun, self._stop_event)


def main(args: Optional[Sequence[str]] = None) -> int:
    """Entry point of `sam2-ros-tracker` and `ros2 run sam2_ros tracker_node` (takes --ros-args).

    SIGINT and SIGTERM are handled here, not by rclpy: the worker stops (finishing and publishing the frame in
    progress) before the executor and the ROS context shut down, so nothing publishes into a dead context.
    Returns 0 after a signal; 1 when the executor's thread died of an exception (logged with its traceback) or
    a model step was still running when the node stopped, so that respawn and systemd see a failure.
    """
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    status = 0
    with rclpy_session(args, signal_handlers=False):
        node = TrackerNode()
        node.sets_process_threads = True  # this process is the node's own
        handler = _RosLogHandler(node)
        library_logger = logging.getLogger("sam2_rt")
        library_logger.addHandler(handler)
        library_logger.setLevel(logging.INFO)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = _ExecutorThread(executor, stop)
        try:
            if node.get_parameter("autostart").value and not stop.is_set():
                node.start()
            spinner.start()
            while not stop.wait(timeout=0.5):  # a timed wait: the signal handler runs between two waits
                pass
        finally:
            if not node.stop():
                status = 1
            executor.shutdown()
            if spinner.is_alive():
                spinner.join()
            if spinner.error is not None:
                error = spinner.error
                node.get_logger().fatal(
                    "the executor thread died, the node stops (exit status 1):\n"
                    + "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip())
                status = 1
            library_logger.removeHandler(handler)
            node.destroy_node()
    return status


if __name__ == "__main__":
    raise SystemExit(main())

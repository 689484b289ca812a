"""The SAM 2 tracker node: camera in, prompts in, label image + objects (+ overlay, detections) out.

Run it as ``ros2 run sam2_ros tracker_node`` (ROS install) or ``sam2-ros-tracker`` (pip venv), both with
the usual ``--ros-args`` (``-p image_size:=512``, ``-r image:=/camera/image_raw``, ``--params-file``...).

Threads: the executor's threads run the callbacks (images, prompts, services, timers); ONE worker thread
runs the model. The image callback only puts the message into a one-slot latest-frame buffer (a frame
still waiting there is dropped and counted), so it never blocks and the latency stays bounded when the
camera is faster than the model. The worker decodes the image, applies the queued prompts and tracks
(`sam2_rt.Tracker.step`), then publishes every output with the INPUT image's header.

Lifecycle (``rclpy.lifecycle``): configure validates the parameters and creates publishers and services;
activate loads the model (refused without a checkpoint unless ``allow_random_weights``) and subscribes;
deactivate unsubscribes and frees the model and the tracked objects; ``autostart`` runs configure +
activate on start. A few parameters apply at once; most are read on activation (see PARAMETERS).

Errors (malformed images, invalid prompts, unknown ids, anything raised while tracking) become one log line
and a counter in /diagnostics; the node keeps running and keeps the objects it tracks.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from sam2_ros.compat import add_parameter_callbacks, rclpy_session
from sam2_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_numpy, image_to_rgb, numpy_to_image
from sam2_ros.msg import Prompt, TrackedObjectArray
from sam2_ros.outputs import Detection2DArray, FrameOutputs, detections_message, mask_message, objects_message
from sam2_ros.overlay import draw_overlay
from sam2_ros.srv import AddPrompt, RemoveObjects, Reset
from sam2_rt.backends import apply_backend
from sam2_rt.checkpoint import default_checkpoint_path, load_model, random_model
from sam2_rt.config import MODEL_NAMES
from sam2_rt.modeling.sam2 import SAM2Model
from sam2_rt.tracker import StreamState, Tracker, TrackerConfig, TrackerInputError

NODE_NAME = "sam2_tracker"
# Seconds between the warnings of a node running with random weights.
RANDOM_WEIGHTS_WARNING_PERIOD_S = 5.0
# Repeats of one error category are logged at most this often (the counters count every one).
ERROR_LOG_PERIOD_S = 5.0
# Seconds of history behind the rate and latency figures of /diagnostics.
STATS_WINDOW_S = 5.0

# Error counters reported in /diagnostics.
IMAGES_REJECTED = "images_rejected"  # malformed or undecodable images
PROMPTS_REJECTED = "prompts_rejected"  # invalid prompts (topic and service)
REQUESTS_REJECTED = "requests_rejected"  # service requests that cannot be served (unknown ids, inactive)
WORKER_ERRORS = "worker_errors"  # unexpected exceptions while tracking or publishing
RESOLUTION_CHANGES = "resolution_changes"  # input size changed mid-stream (tracking continues)
ERROR_COUNTERS = (IMAGES_REJECTED, PROMPTS_REJECTED, REQUESTS_REJECTED, WORKER_ERRORS, RESOLUTION_CHANGES)

# Images: keep only the newest sample (depth 1); reliability is a parameter.
_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
# Prompts must not be lost.
PROMPT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Outputs: reliable (also serves best-effort subscribers), a few frames of slack for slow consumers.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)

ParameterValue = Union[bool, int, float, str]


def image_qos(reliability: str) -> QoSProfile:
    """QoS of the image subscription: keep_last depth 1, volatile, reliability by name."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


# When a parameter's new value takes effect.
APPLIES = {
    "start-up": "Read when the node starts.",
    "configure": "Read when the node is configured.",
    "activation": "Read when the node activates (deactivate + activate to apply a change).",
    "at once": "Applied at once.",
}


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: its default, its documentation and its constraints."""

    name: str
    default: ParameterValue
    description: str
    # Allowed values of a string parameter (empty: any).
    choices: Tuple[str, ...] = ()
    # (from, to, step) of an integer parameter, or (from, to) of a floating-point one.
    value_range: Optional[Tuple[float, ...]] = None
    # When a new value takes effect: one of APPLIES.
    applies: str = "activation"

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor declared for this parameter (description, range, choices)."""
        types = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                 float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
        descriptor = ParameterDescriptor(
            name=self.name, type=types[type(self.default)], description=f"{self.description} {APPLIES[self.applies]}"
        )
        if self.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.value_range is not None and isinstance(self.default, int) and not isinstance(self.default, bool):
            low, high, step = self.value_range
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=int(step))]
        elif self.value_range is not None:
            low, high = self.value_range
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        return descriptor


PARAMETERS: Tuple[ParameterSpec, ...] = (
    ParameterSpec("autostart", True, "Configure and activate the node as soon as it starts.", applies="start-up"),
    ParameterSpec("model", "sam2.1_hiera_tiny", "SAM 2 / SAM 2.1 model.", choices=MODEL_NAMES),
    ParameterSpec(
        "checkpoint", "",
        "Meta's .pt checkpoint file of `model`. Empty: the file `sam2-rt download <model>` stores, if present.",
    ),
    ParameterSpec(
        "allow_random_weights", False,
        "Run with random weights when no checkpoint is found (demos and tests only: the masks are meaningless "
        "and a warning is logged every few seconds). False: the node refuses to activate without a checkpoint.",
    ),
    ParameterSpec("device", "auto", "Where the model runs; auto = cuda when available, else cpu.",
                  choices=("auto", "cuda", "cpu")),
    ParameterSpec("precision", "fp32", "Compute precision of the model (bf16 / fp16 autocast).",
                  choices=("fp32", "bf16", "fp16")),
    ParameterSpec("backend", "eager",
                  "Model execution backend; an unavailable one falls back (tensorrt -> compile -> eager) with a warning.",
                  choices=("eager", "compile", "tensorrt")),
    ParameterSpec("image_size", 1024, "Square model input side in pixels (multiple of 32; 1024 is Meta's).",
                  value_range=(64, 4096, 32)),
    ParameterSpec(
        "cpu_threads", 0,
        "Threads of torch's CPU kernels when the model runs on the CPU; 0 = all cores but one. The node's own "
        "threads, DDS and the camera driver need a core: OpenMP given every core stalls whole steps (seconds) "
        "whenever another thread takes one of them.",
        value_range=(0, 1024, 1),
    ),
    ParameterSpec("max_objects", 16, "Most objects tracked at once (memory is preallocated for all).",
                  value_range=(1, 255, 1)),
    ParameterSpec("max_conditioning_frames", 4, "Prompted frames kept per object (the first and the most recent).",
                  value_range=(1, 64, 1)),
    ParameterSpec("lost_after_frames", 30, "An object absent for more than this many frames is reported LOST.",
                  value_range=(0, 1_000_000, 1)),
    ParameterSpec("input_reliability", "best_effort",
                  "Reliability of the image subscription (best_effort also accepts reliable cameras).",
                  choices=("best_effort", "reliable")),
    ParameterSpec("use_compressed", False,
                  "Subscribe to `image/compressed` (sensor_msgs/CompressedImage, jpeg/png) instead of `image`."),
    ParameterSpec("publish_overlay", True,
                  "Publish `overlay` (bgr8: tinted masks, boxes, ids); drawn only while someone subscribes.",
                  applies="at once"),
    ParameterSpec("overlay_alpha", 0.5, "Opacity of the mask tint in `overlay`.", value_range=(0.0, 1.0),
                  applies="at once"),
    ParameterSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", value_range=(0.1, 60.0)),
)
PARAMETER_SPECS: Dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


def parameter_problem(name: str, value: Any) -> Optional[str]:
    """Why `value` is not acceptable for parameter `name` (None when it is).

    Checks what a ParameterDescriptor cannot express: choices and an existing checkpoint file. Types and
    numeric ranges are enforced by rclpy itself from the descriptors (on declaration and on every set).
    """
    spec = PARAMETER_SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{value!r} is not one of {', '.join(spec.choices)}"
    if name == "checkpoint" and value and not Path(value).expanduser().is_file():
        return f"checkpoint file not found: {value}"
    return None


@dataclass(frozen=True)
class NodeSettings:
    """The parameters read on activation."""

    model: str
    checkpoint: str
    allow_random_weights: bool
    device: str
    precision: str
    backend: str
    image_size: int
    cpu_threads: int
    max_objects: int
    max_conditioning_frames: int
    lost_after_frames: int
    input_reliability: str
    use_compressed: bool


class ActivationError(RuntimeError):
    """The node cannot activate with its current parameters (the message says what to change)."""


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without a GPU raises ActivationError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ActivationError("device 'cuda' requested but torch sees no CUDA device (use device:=cpu or auto)")
    return torch.device(name)


def resolve_checkpoint(settings: NodeSettings) -> Optional[Path]:
    """The checkpoint file to load: the parameter, else the download cache's file of the model, else None."""
    if settings.checkpoint:
        return Path(settings.checkpoint).expanduser()
    cached = default_checkpoint_path(settings.model)
    return cached if cached.is_file() else None


def resolve_cpu_threads(requested: int, cores: Optional[int] = None) -> int:
    """Threads for torch's CPU kernels: `requested`, or for 0 all cores but one (at least one)."""
    if requested > 0:
        return requested
    if cores is None:
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def build_model(settings: NodeSettings, device: torch.device) -> Tuple[SAM2Model, str]:
    """Load the model; returns it (eval, float32, on `device`) and a description of its weights.

    Raises:
      ActivationError: no checkpoint while random weights are not allowed.
      sam2_rt.checkpoint.CheckpointError: the checkpoint file is unusable.
    """
    checkpoint = resolve_checkpoint(settings)
    if checkpoint is not None:
        return load_model(settings.model, checkpoint, settings.image_size, device), str(checkpoint)
    if not settings.allow_random_weights:
        raise ActivationError(
            f"no checkpoint for {settings.model}: set the parameter 'checkpoint' to Meta's .pt file (or run "
            f"`sam2-rt download {settings.model}`, which stores it at {default_checkpoint_path(settings.model)}); "
            "allow_random_weights:=true runs without one, for demos and tests only"
        )
    # Seeded so that two runs with random weights give the same (meaningless) masks.
    return random_model(settings.model, settings.image_size, device), "RANDOM (no checkpoint)"


@dataclass(frozen=True)
class PromptRequest:
    """The tracker arguments of one Prompt message (coordinates in pixels of the original image)."""

    object_id: int
    mode: int
    points: Optional[np.ndarray]  # (N, 2) float64 x, y
    labels: Optional[np.ndarray]  # (N,) int64 0 / 1
    box: Optional[np.ndarray]  # (4,) float64 x0, y0, x1, y1
    mask: Optional[np.ndarray]  # (H, W) bool

    @classmethod
    def from_message(cls, msg: Prompt) -> "PromptRequest":
        """Read a Prompt message. Content is validated by the tracker; this checks only the message itself.

        Raises:
          TrackerInputError: object_id 0, unknown mode, or a mask image that is not one 8/16-bit channel.
        """
        if msg.object_id == 0:
            raise TrackerInputError("object_id 0 is the background of the label image: use ids >= 1")
        if msg.mode not in (Prompt.MODE_ADD, Prompt.MODE_REFINE, Prompt.MODE_REPLACE):
            raise TrackerInputError(f"unknown prompt mode {msg.mode} (MODE_ADD=0, MODE_REFINE=1, MODE_REPLACE=2)")
        mask = None
        if msg.mask.width or msg.mask.height or len(msg.mask.data):
            try:
                mask_pixels = image_to_numpy(msg.mask)
            except ImageConversionError as err:
                raise TrackerInputError(f"mask prompt: {err}") from None
            if mask_pixels.ndim != 2:
                raise TrackerInputError(f"mask prompt must have one channel (mono8 / 8UC1), got {msg.mask.encoding}")
            mask = mask_pixels != 0
        points = np.array([(p.x, p.y) for p in msg.points], dtype=np.float64).reshape(-1, 2) if msg.points else None
        labels = np.asarray(msg.labels, dtype=np.int64) if len(msg.labels) else None
        box = np.asarray(msg.box, dtype=np.float64) if msg.has_box else None
        return cls(int(msg.object_id), int(msg.mode), points, labels, box, mask)


class LatestFrameSlot:
    """A one-slot buffer between the image callback and the worker: a new frame replaces a waiting one.

    `put` never blocks. `take` blocks until a frame is there or the slot is closed (then returns None).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Optional[Any] = None
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store `item`; returns True when it replaced a frame the worker had not taken (a dropped frame)."""
        with self._condition:
            dropped = self._item is not None
            self._item = item
            self._condition.notify()
        return dropped

    def take(self) -> Optional[Any]:
        """The newest frame, removed from the slot; None once the slot is closed."""
        with self._condition:
            while self._item is None and not self._closed:
                self._condition.wait()
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        """Wake the worker for good; later `take` calls return None."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class NodeStats:
    """Frame counters, error counters and a sliding window of latencies (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.errors: Dict[str, int] = {name: 0 for name in ERROR_COUNTERS}
        # (monotonic seconds at publication, latency in seconds) of recently processed frames
        self._recent: Deque[Tuple[float, float]] = deque(maxlen=10_000)

    def received(self, dropped: bool) -> None:
        with self._lock:
            self.frames_received += 1
            self.frames_dropped += int(dropped)

    def processed(self, latency_s: float) -> None:
        with self._lock:
            self.frames_processed += 1
            self._recent.append((time.monotonic(), latency_s))

    def count_error(self, name: str) -> int:
        """Add one to an error counter; returns the new count."""
        with self._lock:
            self.errors[name] += 1
            return self.errors[name]

    def snapshot(self) -> Dict[str, float]:
        """Counters plus rate (Hz) and latency (ms, mean / max) over the last STATS_WINDOW_S seconds."""
        with self._lock:
            now = time.monotonic()
            while self._recent and self._recent[0][0] < now - STATS_WINDOW_S:
                self._recent.popleft()
            latencies = [latency for _, latency in self._recent]
            return {
                "frames_received": self.frames_received,
                "frames_processed": self.frames_processed,
                "frames_dropped": self.frames_dropped,
                "rate_hz": len(latencies) / STATS_WINDOW_S,
                "latency_ms_mean": 1000.0 * float(np.mean(latencies)) if latencies else 0.0,
                "latency_ms_max": 1000.0 * max(latencies) if latencies else 0.0,
                **self.errors,
            }


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
    """Lifecycle node wrapping `sam2_rt.Tracker` (one stream: the subscribed camera).

    Topics (relative, remappable): subscribes `image` (or `image/compressed`) and `prompts`; publishes
    `masks`, `objects`, `overlay`, `detections` (with vision_msgs) and `/diagnostics`. Services:
    `add_prompt`, `remove_objects`, `reset`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        add_parameter_callbacks(self, self._validate_parameters, self._apply_parameters)
        self._publish_overlay = bool(self.get_parameter("publish_overlay").value)
        self._overlay_alpha = float(self.get_parameter("overlay_alpha").value)

        # Services and prompts share a group: they wait for the tracker lock, images must not wait for them.
        self._request_group = MutuallyExclusiveCallbackGroup()
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._stats = NodeStats()
        self._last_error_log: Dict[str, Tuple[float, str]] = {}
        self._status = "unconfigured"
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer: Optional[Any] = None
        self._outputs: Dict[str, Any] = {}
        self._request_services: List[Any] = []
        self._inputs: List[Any] = []
        self._random_weights_timer: Optional[Any] = None

        # Everything below is guarded by _lock (the worker holds it while stepping the tracker).
        self._lock = threading.Lock()
        self._tracker: Optional[Tracker] = None
        self._stream: Optional[StreamState] = None
        self._frame_size: Optional[Tuple[int, int]] = None
        self._description = ""
        self._device = ""
        self._slot: Optional[LatestFrameSlot] = None
        self._worker: Optional[threading.Thread] = None

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
            self._status = "configure failed: invalid parameters: " + "; ".join(problems)
            self.get_logger().error(self._status)
            return TransitionCallbackReturn.FAILURE
        self._outputs = {
            "masks": self.create_lifecycle_publisher(Image, "masks", OUTPUT_QOS),
            "objects": self.create_lifecycle_publisher(TrackedObjectArray, "objects", OUTPUT_QOS),
            "overlay": self.create_lifecycle_publisher(Image, "overlay", OUTPUT_QOS),
        }
        if Detection2DArray is not None:
            self._outputs["detections"] = self.create_lifecycle_publisher(Detection2DArray, "detections", OUTPUT_QOS)
        self._request_services = [
            self.create_service(AddPrompt, "add_prompt", self._on_add_prompt, callback_group=self._request_group),
            self.create_service(RemoveObjects, "remove_objects", self._on_remove_objects,
                                callback_group=self._request_group),
            self.create_service(Reset, "reset", self._on_reset, callback_group=self._request_group),
        ]
        self._diagnostics_timer = self.create_timer(
            float(self.get_parameter("diagnostics_period").value), self._publish_diagnostics
        )
        self._status = "configured (inactive)"
        self.get_logger().info("configured")
        return super().on_configure(state)

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            settings = self._read_settings()
            device = resolve_device(settings.device)
            cpu_note = ""
            if device.type == "cpu":
                torch.set_num_threads(resolve_cpu_threads(settings.cpu_threads))
                cpu_note = f" (torch threads: {torch.get_num_threads()})"
            model, weights = build_model(settings, device)
            # Falls back (tensorrt -> compile -> eager) with a warning naming the reason.
            backend = apply_backend(model, settings.backend, precision=settings.precision)
            tracker = Tracker(
                model,
                TrackerConfig(
                    max_objects=settings.max_objects,
                    max_conditioning_frames=settings.max_conditioning_frames,
                    lost_after_frames=settings.lost_after_frames,
                    precision=settings.precision,
                ),
            )
        except Exception as err:  # noqa: BLE001 - any load failure must leave the node inactive with a reason
            self._status = f"refusing to activate: {err}"
            self.get_logger().error(self._status)
            return TransitionCallbackReturn.FAILURE
        self._description = (
            f"model {settings.model} at {settings.image_size} px on {device}{cpu_note}, {settings.precision}, "
            f"backend {backend.used}{'' if backend.used == backend.requested else f' (asked: {backend.requested})'}, "
            f"weights: {weights}"
        )
        self._device = str(device)
        with self._lock:
            self._tracker = tracker
            self._stream = tracker.create_stream()
            self._frame_size = None
        self._stats = NodeStats()
        if settings.use_compressed:
            image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, image_qos(settings.input_reliability),
                callback_group=self._image_group,
            )
        else:
            image_sub = self.create_subscription(
                Image, "image", self._on_image, image_qos(settings.input_reliability), callback_group=self._image_group
            )
        self._inputs = [
            image_sub,
            self.create_subscription(Prompt, "prompts", self._on_prompt, PROMPT_QOS, callback_group=self._request_group),
        ]
        result = super().on_activate(state)
        self._slot = LatestFrameSlot()
        self._worker = threading.Thread(target=self._run_worker, args=(self._slot,), name="sam2_worker", daemon=True)
        self._worker.start()
        if weights.startswith("RANDOM"):
            self._warn_random_weights()
            self._random_weights_timer = self.create_timer(RANDOM_WEIGHTS_WARNING_PERIOD_S, self._warn_random_weights)
        self._status = "active"
        self.get_logger().info(f"activated: {self._description}; listening on {image_sub.topic_name}")
        return result

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._status = "deactivated (inactive)"
        self.get_logger().info("deactivated: model and objects released")
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_interfaces()
        self._status = "unconfigured"
        return super().on_cleanup(state)

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._destroy_interfaces()
        self._status = "shut down"
        return super().on_shutdown(state)

    def stop(self) -> None:
        """Stop the worker and free the model (safe to call in any state, also after rclpy shut down)."""
        self._release()

    def _release(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._random_weights_timer is not None:
            self.destroy_timer(self._random_weights_timer)
            self._random_weights_timer = None
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
        self._slot, self._worker = None, None
        with self._lock:
            device = self._tracker.device if self._tracker is not None else None
            self._tracker, self._stream = None, None
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()

    def _destroy_interfaces(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        for service in self._request_services:
            self.destroy_service(service)
        self._request_services = []
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None

    def _warn_random_weights(self) -> None:
        self.get_logger().warning(
            "RANDOM WEIGHTS: no checkpoint is loaded (allow_random_weights is true), the masks are MEANINGLESS. "
            "Set the parameter 'checkpoint' for real results."
        )

    # ------------------------------------------------------------------ errors

    def _report(self, counter: str, message: str) -> None:
        """Count an error and log it: a new message at once, repeats of the same one every few seconds."""
        count = self._stats.count_error(counter)
        now = time.monotonic()
        last_time, last_message = self._last_error_log.get(counter, (-np.inf, ""))
        if message != last_message or now - last_time >= ERROR_LOG_PERIOD_S:
            self._last_error_log[counter] = (now, message)
            self.get_logger().warning(f"{message} [{counter}: {count}]")

    # ------------------------------------------------------------------ images and the worker

    def _on_image(self, msg: Union[Image, CompressedImage]) -> None:
        slot = self._slot
        if slot is not None:
            self._stats.received(dropped=slot.put((msg, time.monotonic())))

    def _run_worker(self, slot: LatestFrameSlot) -> None:
        while (item := slot.take()) is not None:
            try:
                self._process(*item)
            except Exception as err:  # noqa: BLE001 - the worker must survive anything one frame raises
                self._report(WORKER_ERRORS, f"frame failed: {type(err).__name__}: {err} (objects kept)")

    def _process(self, msg: Union[Image, CompressedImage], arrival: float) -> None:
        """Decode one frame, track, publish. Runs on the worker thread."""
        try:
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageConversionError as err:
            self._report(IMAGES_REJECTED, f"image rejected: {err}")
            return
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        with self._lock:
            if self._tracker is None or self._stream is None:
                return
            if self._frame_size is not None and size != self._frame_size:
                self._report(
                    RESOLUTION_CHANGES,
                    f"input resolution changed from {self._frame_size[1]}x{self._frame_size[0]} to "
                    f"{size[1]}x{size[0]}: tracking continues with objects {sorted(self._stream.object_ids)}",
                )
            self._frame_size = size
            try:
                result = self._tracker.step(self._stream, rgb)
            except TrackerInputError as err:
                self._report(IMAGES_REJECTED, f"image rejected by the tracker: {err}")
                return
        self._publish(FrameOutputs.from_result(result), rgb, msg.header, arrival)

    def _publish(self, outputs: FrameOutputs, rgb: np.ndarray, header: Any, arrival: float) -> None:
        publishers = self._outputs
        publishers["masks"].publish(mask_message(outputs, header))
        if self._publish_overlay and publishers["overlay"].get_subscription_count() > 0:
            overlay = draw_overlay(rgb, outputs, self._overlay_alpha)
            publishers["overlay"].publish(numpy_to_image(overlay, "bgr8", header))
        if "detections" in publishers and publishers["detections"].get_subscription_count() > 0:
            publishers["detections"].publish(detections_message(outputs, header))
        latency = time.monotonic() - arrival
        publishers["objects"].publish(
            objects_message(outputs, header, int(latency * 1e9), self._stats.frames_dropped)
        )
        self._stats.processed(latency)

    # ------------------------------------------------------------------ prompts and services

    def _apply_prompt(self, msg: Prompt) -> str:
        """Validate a prompt and queue it for the next frame; returns a confirmation.

        Raises:
          TrackerInputError: the prompt is invalid, refers to an unknown object (MODE_REFINE), comes before
            any image, or the node is not active. Nothing changes then.
        """
        request = PromptRequest.from_message(msg)
        with self._lock:
            if self._tracker is None or self._stream is None:
                raise TrackerInputError(f"the node is not active ({self._status})")
            if self._frame_size is None:
                raise TrackerInputError(
                    "no image received yet: prompt coordinates are pixels of the image, whose size is not known"
                )
            known = request.object_id in self._stream.object_ids
            if request.mode == Prompt.MODE_REFINE and not known:
                raise TrackerInputError(
                    f"object {request.object_id} is not tracked: MODE_REFINE needs a tracked id (MODE_ADD starts one)"
                )
            arguments = dict(points=request.points, labels=request.labels, box=request.box, mask=request.mask,
                             frame_size=self._frame_size)
            # Validated by this first call before anything is removed: a bad REPLACE loses nothing.
            self._tracker.add_prompt(self._stream, request.object_id, **arguments)
            if request.mode == Prompt.MODE_REPLACE and known:
                self._tracker.remove_objects(self._stream, [request.object_id])
                self._tracker.add_prompt(self._stream, request.object_id, **arguments)
        action = "replaced" if request.mode == Prompt.MODE_REPLACE and known else "refined" if known else "added"
        return f"object {request.object_id} {action}; the prompt applies to the next frame"

    def _on_prompt(self, msg: Prompt) -> None:
        try:
            self.get_logger().info(self._apply_prompt(msg))
        except TrackerInputError as err:
            self._report(PROMPTS_REJECTED, f"prompt for object {msg.object_id} rejected: {err}")

    def _on_add_prompt(self, request: AddPrompt.Request, response: AddPrompt.Response) -> AddPrompt.Response:
        response.object_id = request.prompt.object_id
        try:
            response.message = self._apply_prompt(request.prompt)
            response.success = True
            self.get_logger().info(response.message)
        except TrackerInputError as err:
            response.success, response.message = False, f"prompt rejected: {err}"
            self._report(PROMPTS_REJECTED, f"add_prompt for object {request.prompt.object_id} rejected: {err}")
        return response

    def _on_remove_objects(
        self, request: RemoveObjects.Request, response: RemoveObjects.Response
    ) -> RemoveObjects.Response:
        ids = [int(obj_id) for obj_id in request.object_ids]
        with self._lock:
            if self._tracker is None or self._stream is None:
                response.success, response.message = False, f"the node is not active ({self._status})"
            else:
                try:
                    self._tracker.remove_objects(self._stream, ids)
                    response.success, response.message = True, f"removed objects {ids}"
                except TrackerInputError as err:
                    response.success, response.message = False, str(err)
                response.remaining_ids = sorted(self._stream.object_ids)
        if response.success:
            self.get_logger().info(response.message)
        else:
            self._report(REQUESTS_REJECTED, f"remove_objects {ids} rejected: {response.message}")
        return response

    def _on_reset(self, request: Reset.Request, response: Reset.Response) -> Reset.Response:
        with self._lock:
            if self._tracker is None or self._stream is None:
                response.success, response.message = False, f"the node is not active ({self._status})"
            else:
                self._tracker.reset(self._stream)
                response.success, response.message = True, "all objects forgotten"
        if response.success:
            self.get_logger().info(f"reset: {response.message}")
        else:
            self._report(REQUESTS_REJECTED, f"reset rejected: {response.message}")
        return response

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        figures = self._stats.snapshot()
        with self._lock:
            objects = sorted(self._stream.object_ids) if self._stream is not None else []
            active = self._tracker is not None
        errors = sum(int(figures[name]) for name in ERROR_COUNTERS if name != RESOLUTION_CHANGES)
        if not active:
            level, message = DiagnosticStatus.WARN, self._status
        elif "RANDOM" in self._description:
            level, message = DiagnosticStatus.WARN, "running with RANDOM weights: masks are meaningless"
        elif errors:
            level, message = DiagnosticStatus.WARN, f"tracking {len(objects)} object(s); {errors} rejected input(s)"
        else:
            level, message = DiagnosticStatus.OK, f"tracking {len(objects)} object(s) at {figures['rate_hz']:.1f} Hz"
        values = {name: f"{value:.2f}" if isinstance(value, float) else str(value) for name, value in figures.items()}
        values.update(objects=str(len(objects)), object_ids=" ".join(map(str, objects)),
                      state=self._status, configuration=self._description)
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: tracker",
            message=message,
            hardware_id=self._device,
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


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


def main(args: Optional[Sequence[str]] = None) -> int:
    """Entry point of `sam2-ros-tracker` and `ros2 run sam2_ros tracker_node` (takes --ros-args)."""
    try:
        with rclpy_session(args):
            node = TrackerNode()
            handler = _RosLogHandler(node)
            library_logger = logging.getLogger("sam2_rt")
            library_logger.addHandler(handler)
            library_logger.setLevel(logging.INFO)
            executor = MultiThreadedExecutor(num_threads=4)
            executor.add_node(node)
            try:
                if node.get_parameter("autostart").value:
                    node.start()
                executor.spin()
            finally:
                node.stop()
                library_logger.removeHandler(handler)
                executor.shutdown()
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

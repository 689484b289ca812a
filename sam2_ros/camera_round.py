"""The worker's round, as a class (`CameraRound`), and the per-camera state it works on (`Camera`).

Each round the worker hands over the newest frame of every camera that has one. `CameraRound.process` decodes
each frame and applies the camera's queued requests and detector boxes to its stream, tracks the frames of all
cameras in ONE batched step (`Tracker.step_many`: one image-encoder batch, the objects of all cameras
together), and publishes each camera's outputs with the INPUT image's header. An image that cannot be decoded
leaves only its camera out, and a failing batch is retried camera by camera. Errors are counted per camera and
kind and logged at most once per kind and camera every few seconds (`ErrorLog`), the first time each distinct
failure is logged with its traceback; the camera keeps the objects it tracks.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Set, Tuple, Union

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from sam2_ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb, numpy_to_image
from sam2_ros.detections import PendingDetections, stamp_ns
from sam2_ros.outputs import FrameOutputs, detections_message, mask_message, objects_message
from sam2_ros.overlay import draw_overlay
from sam2_ros.requests import ObjectBook, QueuedPrompt, QueuedRemoval, QueuedRequest, apply_requests
from sam2_ros.worker import IMAGES_REJECTED, REQUESTS_REJECTED, RESOLUTION_CHANGES, WORKER_ERRORS, NodeStats
from sam2_rt.detection.driver import DetectionDriver, started_and_removed
from sam2_rt.weights.loading import RANDOM_WEIGHTS_BANNER
from sam2_rt.tracking.state import StreamState, TrackerInputError, TrackResult

# Distinct failures (camera, exception type, raising line) whose traceback is logged once; past this many
from sam2_rt.tracking.tracker import Tracker
from sam2_rt.tracking.validation import check_frame
# the node logs them as one line only (bounds memory however many kinds of failure there are).
TRACEBACKS_LOGGED_LIMIT = 256
# Each kind of error is logged at most once per camera in this many seconds (the counters count every one;
# the others are logged at debug level).
ERROR_LOG_PERIOD_S = 5.0

Frame = Tuple[Union[Image, CompressedImage], float]  # (message, monotonic arrival time)


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
class OverlaySettings:
    """The overlay parameters as last set (publish_overlay, overlay_alpha): read by every round."""

    publish: bool
    alpha: float


class ActiveModel(Protocol):
    """What a round needs of the node's active session."""

    tracker: Tracker
    random_weights: bool


class ErrorLog:
    """Counts errors per camera and kind, and logs them rate-limited (worker threads and the executor report)."""

    def __init__(self, logger: Callable[[], Any]) -> None:
        self._logger = logger
        self._last_error_log: Dict[Tuple[str, str], float] = {}
        self._tracebacks_logged: Set[Tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def report(self, camera: Camera, counter: str, message: str, err: Optional[BaseException] = None) -> None:
        """Count an error; log it unless this kind was logged for this camera within ERROR_LOG_PERIOD_S.
        With `err`, the first line logged for each distinct failure carries its traceback."""
        count = camera.stats.count_error(counter)
        self.log_limited((camera.name, counter), f"{camera.label}: {message} [{counter}: {count}]", err)

    def log_limited(self, key: Tuple[str, str], line: str, err: Optional[BaseException] = None) -> None:
        """A warning, unless one of this (camera, kind) was logged within ERROR_LOG_PERIOD_S (then debug).

        With `err`: the warning carries the traceback the first time this failure (camera, kind, exception
        type and the line that raised it) is logged; later ones are a line each, as every other error.
        """
        now = time.monotonic()
        trace = ""
        with self._lock:  # worker threads and the executor report
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
            self._logger().warning(line + trace)
        else:
            self._logger().debug(line)

    def report_failure(self, camera: Camera, err: Exception) -> None:
        """Count and log an unexpected exception of a camera's frame (the camera keeps its objects); the first
        time this failure is logged, with its traceback."""
        self.report(camera, WORKER_ERRORS, f"frame failed: {type(err).__name__}: {err} (objects kept)", err)


class CameraRound:
    """The worker's round over the node's cameras (`process`); the node's state is read at each round."""

    def __init__(self, session: Callable[[], Optional[ActiveModel]], cameras: Callable[[], Mapping[str, Camera]],
                 errors: ErrorLog, overlay: OverlaySettings, logger: Callable[[], Any]) -> None:
        self._session, self._cameras, self._errors = session, cameras, errors
        self._overlay, self._logger = overlay, logger

    def process(self, frames: Dict[str, Frame]) -> None:
        """One round of the worker: decode each camera's frame and apply its queued requests, track the frames of
        all cameras in one batched step (`Tracker.step_many`), publish each camera's outputs."""
        session = self._session()
        if session is None:
            return
        cameras = self._cameras()
        ready: List[CameraFrame] = []
        for name, (msg, arrival) in frames.items():
            camera = cameras[name]
            try:
                frame = self._prepare_camera(session.tracker, camera, msg, arrival)
            except Exception as err:  # noqa: BLE001 - one camera's failure must not stop the others
                self._errors.report_failure(camera, err)
                continue
            if frame is not None:
                ready.append(frame)
        for frame, result in self.track(session.tracker, ready):
            try:
                self._publish_result(frame, result)
            except Exception as err:  # noqa: BLE001 - one camera's failure must not stop the others
                self._errors.report_failure(frame.camera, err)

    def describe(self, name: str, frame: Frame) -> str:
        """A frame of a worker round, as a stuck step is reported: its camera and header stamp."""
        stamp = frame[0].header.stamp
        cameras = self._cameras()
        label = cameras[name].label if name in cameras else repr(name)
        return f"{label} frame stamped {stamp.sec}.{stamp.nanosec:09d}"

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
            self._errors.report(camera, IMAGES_REJECTED, f"image rejected: {err}")
            return None
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        previous = book.set_frame_size(size)
        if previous is not None:
            self._errors.report(
                camera, RESOLUTION_CHANGES,
                f"input resolution changed from {previous[1]}x{previous[0]} to {size[1]}x{size[0]}: tracking "
                f"continues with objects {book.object_ids()}",
            )
        requests = book.drain()
        for request, err in apply_requests(tracker, stream, requests):
            self._errors.report(camera, REQUESTS_REJECTED, f"{type(request).__name__} could not be applied: {err}")
            if isinstance(request, QueuedPrompt) and request.object_id not in stream.object_ids:
                book.forget([request.object_id])
        self._associate(tracker, camera, requests, size, stamp_ns(msg.header.stamp))
        return CameraFrame(camera, stream, rgb, msg.header, arrival)

    def track(self, tracker: Tracker, ready: List[CameraFrame]) -> List[Tuple[CameraFrame, TrackResult]]:
        """Track the round's frames in one batched step. If it fails (nothing changed then), each camera is
        stepped alone: one camera's failure, reported, costs no other camera its frame."""
        if not ready:
            return []
        try:
            return list(zip(ready, tracker.step_many([frame.stream for frame in ready], [frame.rgb for frame in ready])))
        except Exception as err:  # noqa: BLE001 - step_many is transactional: retry each camera alone
            if len(ready) == 1:
                self._errors.report_failure(ready[0].camera, err)
                return []
            self._errors.log_limited(("", "batch"), f"the step of {len(ready)} cameras together failed "
                                                    f"({type(err).__name__}: {err}): stepping each camera alone")
        tracked = []
        for frame in ready:
            try:
                tracked.append((frame, tracker.step(frame.stream, frame.rgb)))
            except Exception as err:  # noqa: BLE001 - one camera's failure must not stop the others
                self._errors.report_failure(frame.camera, err)
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
            self._logger().debug(f"{camera.label}: {decision}")

    def _publish(self, camera: Camera, outputs: FrameOutputs, rgb: np.ndarray, header: Any, arrival: float) -> None:
        publishers = camera.publishers
        publishers["masks"].publish(mask_message(outputs, header))
        if self._overlay.publish and publishers["overlay"].get_subscription_count() > 0:
            session = self._session()
            banner = RANDOM_WEIGHTS_BANNER if session is not None and session.random_weights else None
            overlay = draw_overlay(rgb, outputs, self._overlay.alpha, banner=banner)
            publishers["overlay"].publish(numpy_to_image(overlay, "bgr8", header))
        if "detections" in publishers and publishers["detections"].get_subscription_count() > 0:
            publishers["detections"].publish(detections_message(outputs, header))
        latency = time.monotonic() - arrival
        publishers["objects"].publish(
            objects_message(outputs, header, int(latency * 1e9), camera.stats.frames_dropped)
        )
        camera.stats.processed(latency)

"""The SAM 2 tracker node: cameras in, prompts in, label images + objects (+ overlay, detections) out.

Run it as ``ros2 run sam2_ros tracker_node`` (ROS install) or ``sam2-ros-tracker`` (pip venv), both with the
usual ``--ros-args`` (``-p image_size:=512``, ``-r image:=/camera/image_raw``, ``--params-file``...), or with
``ros2 launch sam2_ros tracker.launch.py``.

This module is the lifecycle wiring (parameters, transitions, subscriptions, services, publishers); its parts
live beside it: `parameters` (the parameter table and its validation), `requests` (prompt / remove / reset
requests, validated and answered at once, applied on the next frame), `worker` (latest-frame slots, the worker
threads, statistics), `camera_round` (the worker's round, its error log), `session` (the model an activation
loads), `diagnostics` (the /diagnostics message), `qos`, `outputs`, `overlay` (messages), `main` (the process).

One model serves every camera of the `cameras` parameter (default: one camera with the plain topic names).
Threads: one single-threaded executor runs the callbacks; the model runs on the worker threads (`worker`: one on
a GPU; on a CPU `worker_threads` auto runs one per camera up to the cores), each round tracking the newest frame
of every camera it takes in one batched step (`camera_round`). Image callbacks only put the message into their
camera's one-slot buffer; services, the prompt topics and /diagnostics never wait for a model step. Every
output carries the INPUT image's header.

Lifecycle (``rclpy.lifecycle``): configure validates the parameters and creates each camera's publishers and
the services; activate loads the model (refused without a checkpoint unless ``allow_random_weights``) and
subscribes; deactivate unsubscribes, stops the worker and frees the model and the tracked objects; cleanup
removes publishers and services; ``autostart`` runs configure + activate on start.

Errors (malformed images, invalid prompts, unknown ids or cameras, anything raised while tracking) are counted
per kind and logged at most once per kind and camera every few seconds; the node keeps running and keeps the
objects it tracks.
"""
from __future__ import annotations

import functools
import math
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from sam2_ros.camera_round import Camera, CameraRound, ErrorLog, OverlaySettings
from sam2_ros.compat import add_parameter_callbacks
from sam2_ros.detections import PendingDetections, detections_from_array, detections_from_vision, stamp_ns
from sam2_ros.diagnostics import CameraFacts, NodeSnapshot, SessionFacts, diagnostics_message
from sam2_ros.msg import DetectionArray, Prompt, TrackedObjectArray
from sam2_ros.outputs import Detection2DArray
from sam2_ros.parameters import (APPLIES, NODE_NAME, PARAMETER_SPECS, PARAMETERS, NodeSettings, parameter_problem,
                                 parameters_problems)
from sam2_ros.qos import DETECTION_QOS, DIAGNOSTICS_QOS, OUTPUT_QOS, PROMPT_QOS, image_qos
from sam2_ros.requests import RESET_MESSAGE, ObjectBook, PromptRequest, removal_message
from sam2_ros.session import ActivationError, Session, association_config, create_session, return_freed_heap_memory
from sam2_ros.srv import AddPrompt, RemoveObjects, Reset
from sam2_ros.worker import (
    PROMPTS_REJECTED,
    REQUESTS_REJECTED,
    WORKER_ERRORS,
    FrameWorker,
    NodeStats,
    WorkerStuckError,
    choose_worker_threads,
)
from sam2_rt.detection.driver import DetectionDriver
from sam2_rt import TrackerInputError

# Seconds between the warnings of a node running with random weights.
RANDOM_WEIGHTS_WARNING_PERIOD_S = 5.0


def camera_topic(camera: str, name: str) -> str:
    """The relative topic `name` of `camera` ("" = the plain name)."""
    return f"{camera}/{name}" if camera else name


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
        self._overlay = OverlaySettings(publish=bool(self.get_parameter("publish_overlay").value),
                                        alpha=float(self.get_parameter("overlay_alpha").value))
        self._diagnostics_window = float(self.get_parameter("diagnostics_window").value)
        self._errors = ErrorLog(lambda: self.get_logger())
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
        # The worker's round: reads the session and the cameras above at each round.
        self._round = CameraRound(lambda: self._session, lambda: self._cameras, self._errors, self._overlay,
                                  lambda: self.get_logger())

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
                self._overlay.publish = bool(parameter.value)
            elif parameter.name == "overlay_alpha":
                self._overlay.alpha = float(parameter.value)
            elif parameter.name == "diagnostics_window":
                self._diagnostics_window = float(parameter.value)
            elif parameter.name in PARAMETER_SPECS:
                spec = PARAMETER_SPECS[parameter.name]
                self.get_logger().info(f"parameter {parameter.name} = {parameter.value!r}: {APPLIES[spec.applies]}")

    def _read_settings(self) -> NodeSettings:
        """The activation parameters; ActivationError names the first invalid one (or pair: model, image_size)."""
        values = {name: self.get_parameter(name).value for name in NodeSettings.__dataclass_fields__}
        problems = parameters_problems(values)
        if problems:
            raise ActivationError(f"invalid parameter {problems[0]}")
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
        problems = parameters_problems({name: self.get_parameter(name).value for name in PARAMETER_SPECS})
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
            settings = self._read_settings()
            session = create_session(settings, len(self._cameras), self._frame_worker,
                                     self.sets_process_threads)
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
        association = association_config(settings)
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
            process=self._round.process, on_error=lambda err: self._on_worker_error(worker, err), threads=threads,
            share=share, describe=self._round.describe, reason=reason)
        return worker

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

    # ------------------------------------------------------------------ images and the worker's errors

    def _on_worker_error(self, worker: FrameWorker, err: Exception) -> None:
        """An exception that escaped a worker round: charged to each camera of that round (their frames are lost)."""
        cameras = [self._cameras[name] for name in worker.current_cameras() if name in self._cameras]
        for camera in cameras:
            self._errors.report_failure(camera, err)
        if not cameras:
            self._unrouted.count_error(WORKER_ERRORS)
            self._errors.log_limited(("", WORKER_ERRORS), f"a worker round failed: {type(err).__name__}: {err}", err)

    def _on_image(self, camera: Camera, msg: Union[Image, CompressedImage]) -> None:
        session = self._session
        if session is not None:
            camera.stats.received(dropped=session.worker.frames.put(camera.name, (msg, time.monotonic())))

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
            self._errors.report(camera, PROMPTS_REJECTED, f"prompt for object {msg.object_id} rejected: {err}")

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
            self._errors.report(camera, PROMPTS_REJECTED, f"add_prompt for object {request.prompt.object_id} rejected: {err}")
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
            self._errors.report(camera, REQUESTS_REJECTED, f"remove_objects {ids} rejected: {err}")
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
            self._errors.report(camera, counter, message)
        else:
            count = self._unrouted.count_error(counter)
            self._errors.log_limited(("", counter), f"{message} [{counter}: {count}]")
        return response

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        self._diagnostics_pub.publish(self.diagnostics())

    def diagnostics(self) -> DiagnosticArray:
        """The /diagnostics message of now: the node's status (and each camera's, when they are named)."""
        session, window = self._session, self._diagnostics_window
        facts = None if session is None else SessionFacts(
            description=session.description, device=session.device, random_weights=session.random_weights,
            worker_threads=f"{session.worker.thread_count} ({session.worker.reason})",
            compilations=session.tracker.compilations)
        cameras = {name: CameraFacts(camera.stats.snapshot(), camera.stats.recent_faults(window),
                                     camera.book.object_ids() if camera.book is not None else [])
                   for name, camera in self._cameras.items()}
        return diagnostics_message(NodeSnapshot(
            node_name=self.get_fully_qualified_name(), stamp=self.get_clock().now().to_msg(), state=self._status,
            state_level=self._status_level, window_s=window, session=facts, cameras=cameras,
            unrouted=CameraFacts(self._unrouted.snapshot(), self._unrouted.recent_faults(window))))


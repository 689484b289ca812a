"""The node's failure paths: a dying executor, a stuck model step, errors charged to the right camera with
their traceback, and an inactive node that says why in /diagnostics."""
from __future__ import annotations

import threading
from typing import Any, Iterator, List, Tuple

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

import sam2_ros.worker  # noqa: E402
from sam2_ros.conversions import numpy_to_image  # noqa: E402
from sam2_ros.main import _spin  # noqa: E402
from sam2_ros.node import TrackerNode  # noqa: E402
from sam2_ros.srv import RemoveObjects, Reset  # noqa: E402
from sam2_ros.worker import REQUESTS_REJECTED, WORKER_ERRORS, FrameWorker, WorkerStuckError  # noqa: E402

# Hang guard of the waits below (never reached when the code works; not a speed requirement).
HANG_GUARD_S = 120.0


class RecordingLogger:
    """Stands in for a node's ROS logger: keeps (level, line) of every call."""

    def __init__(self) -> None:
        self.lines: List[Tuple[str, str]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda line: self.lines.append((level, line))


def image_message(stamp_sec: int = 12, stamp_nanosec: int = 345) -> Any:
    header = Header(frame_id="x")
    header.stamp.sec, header.stamp.nanosec = stamp_sec, stamp_nanosec
    return numpy_to_image(np.full((48, 64, 3), 90, dtype=np.uint8), "rgb8", header)


@pytest.fixture
def two_camera_node(rclpy_context) -> Iterator[TrackerNode]:
    """An in-process node, cameras front and rear, active with random weights at 64 px (no DDS traffic)."""
    overrides = [Parameter("image_size", value=64), Parameter("device", value="cpu"),
                 Parameter("allow_random_weights", value=True), Parameter("cameras", value=["front", "rear"]),
                 Parameter("autostart", value=False)]
    node = TrackerNode(context=rclpy_context, parameter_overrides=overrides)
    try:
        yield node
    finally:
        node.stop()
        node.destroy_node()


# --------------------------------------------------------------------------- the executor thread


def test_an_exception_in_a_callback_ends_the_spinning_and_is_returned(rclpy_context) -> None:
    node = Node("crashing_node", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)

    def crash() -> None:
        raise ZeroDivisionError("a bug in a callback")

    node.create_timer(0.01, crash)
    stop = threading.Event()
    try:
        error = _spin(executor, stop)
    finally:
        executor.shutdown()
        node.destroy_node()
    assert isinstance(error, ZeroDivisionError) and stop.is_set()


class AlwaysInvalid:
    """An executor whose every spin raises InvalidHandle (a handle that stays invalid)."""

    def __init__(self) -> None:
        self.spins = 0

    def spin(self) -> None:
        self.spins += 1
        raise InvalidHandle("destroyed")


def test_invalid_handle_is_retried_a_bounded_number_of_times() -> None:
    executor, stop = AlwaysInvalid(), threading.Event()
    error = _spin(executor, stop, retries=5, window_s=1e9)
    assert executor.spins == 6 and stop.is_set()
    assert isinstance(error, RuntimeError) and "InvalidHandle 6 times" in str(error)
    assert isinstance(error.__cause__, InvalidHandle)


def test_the_node_process_exits_non_zero_when_its_executor_thread_dies(processes) -> None:
    """A callback that raises kills the executor thread: the process must not exit 0 (a clean stop)."""
    code = ("import sys\n"
            "import sam2_ros.main as main\n"
            "import sam2_ros.node as node\n"
            "def crash(self):\n"
            "    raise ZeroDivisionError('a bug in the diagnostics timer')\n"
            "node.TrackerNode._publish_diagnostics = crash\n"
            "sys.exit(main.main(['--ros-args', '-p', 'autostart:=false', '-p', 'diagnostics_period:=0.1']))\n")
    proc = processes.start("-c", code)
    output, _ = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 1, output
    assert "the executor thread died" in output and "ZeroDivisionError: a bug in the diagnostics timer" in output
    assert "Traceback" in output


# --------------------------------------------------------------------------- a stuck model step


def test_stop_waits_a_bounded_time_and_names_the_stuck_step() -> None:
    release = threading.Event()
    started = threading.Event()

    def process(frames: dict) -> None:
        started.set()
        release.wait()

    worker = FrameWorker(process, lambda err: None, describe=lambda camera, item: f"camera {camera!r} frame {item}")
    worker.start()
    worker.frames.put("front", 7)
    assert started.wait(HANG_GUARD_S)
    try:
        with pytest.raises(WorkerStuckError) as stuck:
            worker.stop(timeout_s=0.2)
        assert "the step of camera 'front' frame 7, running for" in str(stuck.value)
        assert [step.cameras for step in worker.steps()] == [("front",)]
    finally:
        release.set()
    worker.stop(timeout_s=HANG_GUARD_S)  # the step returns: the thread ends
    assert worker.steps() == []


def test_deactivate_with_a_stuck_step_returns_reports_it_and_the_node_can_stop(
    two_camera_node: TrackerNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = two_camera_node
    assert node.start()
    release, started = threading.Event(), threading.Event()

    def stuck_step(streams: Any, frames: Any) -> Any:
        started.set()
        release.wait()
        raise RuntimeError("released")

    monkeypatch.setattr(node._session.tracker, "step_many", stuck_step)
    monkeypatch.setattr(sam2_ros.worker, "STOP_TIMEOUT_S", 0.2)
    logger = RecordingLogger()
    monkeypatch.setattr(node, "get_logger", lambda: logger)
    try:
        node._on_image(node._cameras["rear"], image_message())
        assert started.wait(HANG_GUARD_S)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        errors = [line for level, line in logger.lines if level == "error"]
        assert len(errors) == 1 and "the step of camera 'rear' frame stamped 12.000000345" in errors[0]
        status = node.diagnostics().status[0]
        assert status.level == DiagnosticStatus.ERROR and "still running" in status.message
    finally:
        release.set()


# --------------------------------------------------------------------------- errors charged to their camera


def test_a_worker_round_failure_is_charged_to_its_camera_with_the_traceback_once(
    two_camera_node: TrackerNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = two_camera_node
    assert node.start()
    front, rear = node._cameras["front"], node._cameras["rear"]
    failed = threading.Semaphore(0)

    def broken_track(tracker: Any, ready: Any) -> Any:
        raise KeyError("a bug between decoding and tracking")

    def report_failure(camera: Any, err: Exception) -> None:
        report(camera, err)
        failed.release()

    report = node._errors.report_failure
    monkeypatch.setattr(node._round, "track", broken_track)
    monkeypatch.setattr(node._errors, "report_failure", report_failure)
    monkeypatch.setattr("sam2_ros.camera_round.ERROR_LOG_PERIOD_S", 0.0)  # every failure logged: only the traceback is once
    logger = RecordingLogger()
    monkeypatch.setattr(node, "get_logger", lambda: logger)
    for _ in range(2):
        node._on_image(rear, image_message())
        assert failed.acquire(timeout=HANG_GUARD_S)
    assert (front.stats.errors[WORKER_ERRORS], rear.stats.errors[WORKER_ERRORS]) == (0, 2)
    warnings = [line for level, line in logger.lines if level == "warning" and "frame failed" in line]
    assert len(warnings) == 2 and all(line.startswith("camera 'rear': frame failed: KeyError") for line in warnings)
    assert "Traceback" in warnings[0] and "broken_track" in warnings[0]
    assert "Traceback" not in warnings[1]


def test_rejected_requests_are_charged_to_the_camera_they_name_or_to_none(two_camera_node: TrackerNode) -> None:
    node = two_camera_node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS  # configured, not active: requests refused
    front, rear = node._cameras["front"], node._cameras["rear"]
    assert not node._on_reset(Reset.Request(camera="rear"), Reset.Response()).success
    assert not node._on_remove_objects(RemoveObjects.Request(camera="rear", object_ids=[1]),
                                       RemoveObjects.Response()).success
    assert (front.stats.errors[REQUESTS_REJECTED], rear.stats.errors[REQUESTS_REJECTED]) == (0, 2)
    answer = node._on_reset(Reset.Request(camera="side"), Reset.Response())
    assert not answer.success and "unknown camera 'side'" in answer.message
    assert (front.stats.errors[REQUESTS_REJECTED], rear.stats.errors[REQUESTS_REJECTED]) == (0, 2)
    totals = {value.key: value.value for value in node.diagnostics().status[0].values}
    assert totals[REQUESTS_REJECTED] == "3"


# --------------------------------------------------------------------------- an inactive node says why


def test_an_inactive_node_without_checkpoint_reports_error_with_the_fix_in_diagnostics(
    rclpy_context, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("SAM2_RT_CACHE", str(tmp_path))  # no checkpoint downloaded
    node = TrackerNode(context=rclpy_context, parameter_overrides=[Parameter("autostart", value=False),
                                                                   Parameter("device", value="cpu")])
    try:
        before = node.diagnostics().status[0]
        assert before.level == DiagnosticStatus.WARN and "ros2 lifecycle set /sam2_tracker configure" in before.message
        assert not node.start()
        for status in (node.diagnostics().status[0], node.diagnostics().status[0]):  # for as long as it is inactive
            assert status.level == DiagnosticStatus.ERROR
            assert "refusing to activate: no checkpoint" in status.message
            assert "sam2-rt download sam2.1_hiera_tiny" in status.message
            assert "ros2 lifecycle set /sam2_tracker activate" in status.message
    finally:
        node.destroy_node()


def test_a_node_that_fails_to_configure_reports_error_in_diagnostics(rclpy_context) -> None:
    # start-up values (overrides) are checked by configure, not when they are declared
    overrides = [Parameter("autostart", value=False), Parameter("cameras", value=["front", "front"])]
    node = TrackerNode(context=rclpy_context, parameter_overrides=overrides)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        status = node.diagnostics().status[0]
        assert status.level == DiagnosticStatus.ERROR and "unique" in status.message
        assert "ros2 param set /sam2_tracker" in status.message
    finally:
        node.destroy_node()

"""The /diagnostics message as a pure function of a plain snapshot (sam2_ros.diagnostics): levels, the reason of
an inactive node, the node's totals and one status per named camera. No node, no DDS: message types only."""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from sam2_ros.diagnostics import CameraFacts, NodeSnapshot, SessionFacts, diagnostics_message  # noqa: E402
from sam2_ros.worker import IMAGES_REJECTED, REQUESTS_REJECTED, WORKER_ERRORS, NodeStats  # noqa: E402

NODE = "/robot/sam2_tracker"
STAMP = Time(sec=1_700_000_000, nanosec=123)


def figures(**values: float) -> Dict[str, float]:
    """A camera's figures as `NodeStats.snapshot` gives them (every key), some set."""
    snapshot = NodeStats().snapshot()
    snapshot.update(values)
    return snapshot


def session(random_weights: bool = False) -> SessionFacts:
    return SessionFacts(description="model tiny at 64 px on cpu", device="cpu", random_weights=random_weights,
                        worker_threads="1 (auto: 1 on cpu)", compilations={"image_encoder": 2})


def snapshot(cameras: Mapping[str, CameraFacts], facts: Optional[SessionFacts] = None, state: str = "active",
             level: bytes = DiagnosticStatus.OK, unrouted: Optional[CameraFacts] = None) -> NodeSnapshot:
    return NodeSnapshot(node_name=NODE, stamp=STAMP, state=state, state_level=level, window_s=10.0, session=facts,
                        cameras=cameras, unrouted=unrouted or CameraFacts(figures(), {}))


def values_of(status: DiagnosticStatus) -> Dict[str, str]:
    return {value.key: value.value for value in status.values}


def test_an_inactive_node_reports_its_state_at_its_level_with_the_fix() -> None:
    state = "refusing to activate: no checkpoint; then `ros2 lifecycle set /robot/sam2_tracker activate`"
    message = diagnostics_message(snapshot({"": CameraFacts(figures(), {})}, state=state,
                                           level=DiagnosticStatus.ERROR))
    assert message.header.stamp == STAMP
    [status] = message.status
    assert (status.level, status.message, status.name) == (DiagnosticStatus.ERROR, state, f"{NODE}: tracker")
    values = values_of(status)
    assert status.hardware_id == "" and values["configuration"] == values["worker_threads"] == ""
    assert values["state"] == state and not any(key.startswith("compilations_") for key in values)


def test_an_active_node_without_faults_is_ok_and_says_what_it_tracks() -> None:
    message = diagnostics_message(snapshot({"": CameraFacts(figures(rate_hz=12.34, frames_processed=7), {}, [1, 3])},
                                           facts=session()))
    [status] = message.status
    assert status.level == DiagnosticStatus.OK and status.message == "tracking 2 object(s) at 12.3 Hz"
    assert status.hardware_id == "cpu"
    values = values_of(status)
    assert values["objects"] == "2" and values["object_ids"] == "1 3" and values["rate_hz"] == "12.34"
    assert values["frames_processed"] == "7" and values["recent_faults"] == "0"
    assert values["configuration"] == "model tiny at 64 px on cpu" and values["worker_threads"] == "1 (auto: 1 on cpu)"
    assert values["compilations_image_encoder"] == "2"


def test_recent_faults_make_it_warn_and_random_weights_warn_before_anything_else() -> None:
    faults = {WORKER_ERRORS: 2, IMAGES_REJECTED: 1}
    [status] = diagnostics_message(snapshot({"": CameraFacts(figures(), faults, [1])}, facts=session())).status
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "in the last 10 s: 1 images_rejected, 2 worker_errors"
    assert values_of(status)["recent_faults"] == "3"
    [status] = diagnostics_message(snapshot({"": CameraFacts(figures(), faults, [1])},
                                            facts=session(random_weights=True))).status
    assert status.level == DiagnosticStatus.WARN and "RANDOM weights" in status.message


def test_named_cameras_get_a_status_each_and_the_totals_count_requests_that_named_none() -> None:
    cameras = {
        "front": CameraFacts(figures(rate_hz=10.0, frames_processed=5, latency_ms_max=40.0), {}, [1]),
        "rear": CameraFacts(figures(rate_hz=5.0, frames_processed=2, latency_ms_max=90.0), {WORKER_ERRORS: 1}, [2, 4]),
    }
    unrouted = CameraFacts(figures(requests_rejected=3), {REQUESTS_REJECTED: 3})
    total, front, rear = diagnostics_message(snapshot(cameras, facts=session(), unrouted=unrouted)).status
    assert [status.name for status in (total, front, rear)] == [
        f"{NODE}: tracker", f"{NODE}: camera front", f"{NODE}: camera rear"]
    assert (front.level, rear.level) == (DiagnosticStatus.OK, DiagnosticStatus.WARN)
    assert total.level == DiagnosticStatus.WARN
    assert total.message == "in the last 10 s: 3 requests_rejected, 1 worker_errors"
    totals = values_of(total)
    assert totals["frames_processed"] == "7" and totals["requests_rejected"] == "3" and totals["rate_hz"] == "15.00"
    assert totals["latency_ms_max"] == "90.00" and totals["object_ids"] == "1 2 4" and totals["recent_faults"] == "4"
    assert values_of(rear)["object_ids"] == "2 4" and values_of(front)["requests_rejected"] == "0"


def test_an_inactive_node_with_named_cameras_reports_its_state_for_each() -> None:
    cameras = {"a": CameraFacts(figures(), {}), "b": CameraFacts(figures(), {})}
    statuses = diagnostics_message(snapshot(cameras, state="configured (inactive)",
                                            level=DiagnosticStatus.WARN)).status
    assert len(statuses) == 3
    assert all(s.level == DiagnosticStatus.WARN and s.message == "configured (inactive)" for s in statuses)

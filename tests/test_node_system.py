"""The node in a ROS system (issue: private services that never wait for the model, clean shutdown, honest
diagnostics), over real DDS with the node in its own process.

The slow node runs at image_size 1024 on the CPU (seconds per step) with a checkpoint file of seeded random
weights (so its diagnostics are not WARN for "random weights"), to order a service call against a step in
progress. Assertions are orderings and counts, never durations.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import FASTDDS_PROFILE, Processes, open_rclpy_context

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from testkit.ros_client import (  # noqa: E402
    STEP_TIMEOUT,
    Client,
    OutputReader,
    ids,
    node_command,
    node_env,
    wait_until,
)

from sam2_rt.weights.checkpoint import random_model  # noqa: E402

FRAMES = iter(range(10_000, 1_000_000))
ERROR_MARKERS = ("[ERROR]", "Traceback", "Failed to publish", "context is invalid", "RCLError")


@pytest.fixture(scope="module")
def ros_context():
    with open_rclpy_context(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE)) as context:
        yield context


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Meta's checkpoint format ({'model': state_dict}) holding seeded random weights."""
    path = tmp_path_factory.mktemp("weights") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": random_model("sam2.1_hiera_tiny", image_size=1024).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def slow_node(ros_context, tmp_path_factory, checkpoint):
    processes = Processes()
    client = None
    try:
        parameters = ("image_size:=1024", "device:=cpu", f"checkpoint:={checkpoint}", "diagnostics_period:=0.25",
                      "diagnostics_window:=2.0", "publish_overlay:=false")
        proc = processes.start(*node_command(*parameters, namespace="/slow"), env=node_env(tmp_path_factory))
        output = OutputReader(proc)
        assert output.wait_for("activated:", timeout=180.0), output.text()
        client = Client(ros_context, namespace="/slow")
        client.step(next(FRAMES))
        yield client, output
    finally:
        if client is not None:
            client.close()
        processes.close()


def test_a_prompt_sent_during_a_step_is_answered_before_the_step_ends_and_applies_on_the_next_frame(slow_node):
    client, _ = slow_node
    client.reset()
    assert client.prompt(1, points=[(200, 200)], labels=[1]).success
    client.step(next(FRAMES))
    received = int(client.diagnostics_after(time.monotonic())["frames_received"])

    in_step = next(FRAMES)
    client.camera.publish(client.image(in_step))
    # The worker takes a frame the moment it arrives: once the node counted it, the step runs (seconds at 1024).
    assert wait_until(lambda: int(client.diagnostics[-1][1]["frames_received"]) > received, timeout=STEP_TIMEOUT)
    answer = client.prompt(2, box=(300, 100, 420, 260))
    answered_during_step = in_step not in client.objects
    diagnostics_before = len(client.diagnostics)
    assert answer.success and "added" in answer.message, answer.message
    assert answered_during_step, "the service waited for the step"
    assert wait_until(lambda: in_step in client.objects, timeout=STEP_TIMEOUT)
    assert len(client.diagnostics) > diagnostics_before or wait_until(
        lambda: len(client.diagnostics) > diagnostics_before, timeout=10.0)
    assert ids(client.objects[in_step]) == [1]  # the frame in progress when the prompt came
    assert ids(client.step(next(FRAMES))) == [1, 2]  # the next frame has it


def test_diagnostics_warn_while_inputs_are_rejected_and_are_ok_again_after_the_window(slow_node):
    client, output = slow_node
    client.reset()
    client.step(next(FRAMES))
    assert wait_until(lambda: client.diagnostics[-1][2] == DiagnosticStatus.OK, timeout=30.0), client.diagnostics[-1]
    bad = client.image(next(FRAMES))
    bad.encoding = "yuv422"
    before = int(client.diagnostics[-1][1]["images_rejected"])
    for _ in range(3):
        client.camera.publish(bad)
        assert wait_until(lambda: int(client.diagnostics[-1][1]["images_rejected"]) > before, timeout=STEP_TIMEOUT)
        before = int(client.diagnostics[-1][1]["images_rejected"])
    warned = time.monotonic()
    assert wait_until(lambda: client.diagnostics[-1][2] == DiagnosticStatus.WARN, timeout=30.0)
    assert "images_rejected" in client.diagnostics[-1][3]
    # Good frames only: once the window has passed without a rejection, the level is OK again.
    deadline = time.monotonic() + 4 * STEP_TIMEOUT
    while not (client.diagnostics[-1][0] > warned and client.diagnostics[-1][2] == DiagnosticStatus.OK):
        assert time.monotonic() < deadline, client.diagnostics[-1]
        client.step(next(FRAMES))
    totals = client.diagnostics[-1][1]
    assert int(totals["images_rejected"]) >= 3 and int(totals["recent_faults"]) == 0


def _stream_frames(client: Client, stop: threading.Event, rate_hz: float = 30.0) -> None:
    while not stop.is_set():
        client.camera.publish(client.image(next(FRAMES)))
        time.sleep(1.0 / rate_hz)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_a_camera_streams_ends_the_node_with_exit_code_0_and_no_error(
    ros_context, tmp_path_factory, signal_number
) -> None:
    processes = Processes()
    client = None
    stop = threading.Event()
    try:
        namespace = f"/signal_{signal_number}"
        parameters = ("image_size:=128", "device:=cpu", "allow_random_weights:=true")
        proc = processes.start(*node_command(*parameters, namespace=namespace), env=node_env(tmp_path_factory))
        output = OutputReader(proc)
        assert output.wait_for("activated:", timeout=120.0), output.text()
        client = Client(ros_context, namespace=namespace)
        client.step(next(FRAMES))
        assert client.prompt(1, points=[(200, 200)], labels=[1]).success
        camera = threading.Thread(target=_stream_frames, args=(client, stop))
        camera.start()
        processed = len(client.objects)
        assert wait_until(lambda: len(client.objects) >= processed + 5, timeout=STEP_TIMEOUT)  # frames flow
        proc.send_signal(signal_number)
        assert proc.wait(timeout=60.0) == 0, output.text()
        stop.set()
        camera.join()
        assert wait_until(lambda: not output._thread.is_alive(), timeout=10.0)
        errors = [line for line in output.lines if any(marker in line for marker in ERROR_MARKERS)]
        assert not errors, "\n".join(errors)
    finally:
        stop.set()
        if client is not None:
            client.close()
        processes.close()

"""The node with `model: edgetam`: it configures, activates and tracks (random weights at 256 px, in-process,
no DDS traffic), and an image_size EdgeTAM cannot run at (not a multiple of 256) is refused at configure, and at
activation when it changed since, with a clear error while the node keeps running."""
from __future__ import annotations

import threading
from typing import Any, Iterator, List

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import Point32  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sam2_ros.conversions import numpy_to_image  # noqa: E402
from sam2_ros.msg import Prompt  # noqa: E402
from sam2_ros.node import TrackerNode  # noqa: E402
from sam2_ros.parameters import LaunchArgumentError, launch_parameters, parameters_problems  # noqa: E402
from sam2_ros.srv import AddPrompt  # noqa: E402
from sam2_rt.modeling.config import MODEL_NAMES  # noqa: E402

# Hang guard of the waits below (never reached when the code works; not a speed requirement).
HANG_GUARD_S = 300.0
EDGETAM_SIZE_ERROR = "image_size: EdgeTAM needs an image_size that is a multiple of 256"


def edgetam_node(context: Any, image_size: int) -> TrackerNode:
    overrides = [Parameter("model", value="edgetam"), Parameter("image_size", value=image_size),
                 Parameter("device", value="cpu"), Parameter("allow_random_weights", value=True),
                 Parameter("autostart", value=False)]
    return TrackerNode(context=context, parameter_overrides=overrides)


@pytest.fixture
def node(rclpy_context) -> Iterator[TrackerNode]:
    node = edgetam_node(rclpy_context, 256)
    try:
        yield node
    finally:
        node.stop()
        node.destroy_node()


def image_message() -> Any:
    """A 48 x 64 frame: a bright square on a dark background."""
    frame = np.full((48, 64, 3), 30, dtype=np.uint8)
    frame[10:30, 20:40] = 220
    header = Header(frame_id="camera")
    header.stamp.sec = 7
    return numpy_to_image(frame, "rgb8", header)


def test_the_node_configures_activates_and_tracks_with_edgetam(node: TrackerNode,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert node.start()
    assert "model edgetam at 256 px" in node._session.description
    camera = node._cameras[""]
    published: List[Any] = []
    arrived = threading.Semaphore(0)
    publish = camera.publishers["objects"].publish

    def recording_publish(msg: Any) -> None:
        published.append(msg)
        publish(msg)
        arrived.release()

    monkeypatch.setattr(camera.publishers["objects"], "publish", recording_publish)
    request = AddPrompt.Request(prompt=Prompt(object_id=4, mode=Prompt.MODE_ADD, points=[Point32(x=30.0, y=20.0)],
                                              labels=[1]))
    for index in range(3):
        if index == 1:  # prompts are in pixels of the camera's images: after the first one
            assert node._on_add_prompt(request, AddPrompt.Response()).success
        node._on_image(camera, image_message())
        assert arrived.acquire(timeout=HANG_GUARD_S), "no objects message (see the node's log)"
    assert [[o.object_id for o in msg.objects] for msg in published] == [[], [4], [4]]
    assert published[-1].header.stamp.sec == 7
    # the stream holds EdgeTAM's memory: (512, 64) perceiver tokens per memory frame
    assert camera.stream.object_ids == [4] and camera.stream.memory.recent_feats.shape[2:] == (512, 64)
    assert camera.stats.frames_processed == 3 and sum(camera.stats.errors.values()) == 0


def test_an_image_size_edgetam_cannot_run_at_is_refused_at_configure_and_activation(rclpy_context) -> None:
    node = edgetam_node(rclpy_context, 320)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        status = node.diagnostics().status[0]
        assert status.level == DiagnosticStatus.ERROR
        assert "configure failed: invalid parameters: " + EDGETAM_SIZE_ERROR in status.message
        assert "got 320 (model edgetam)" in status.message and "ros2 param set /sam2_tracker" in status.message
        # the node keeps running: a valid size, and it configures
        assert node.set_parameters([Parameter("image_size", value=256)])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        # a size changed after configure (each value valid on its own) is refused by activation, in one line
        assert node.set_parameters([Parameter("image_size", value=384)])[0].successful
        assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
        status = node.diagnostics().status[0]
        assert status.level == DiagnosticStatus.ERROR
        assert "refusing to activate: invalid parameter " + EDGETAM_SIZE_ERROR in status.message
        assert "Traceback" not in status.message and node._session is None
        assert node.set_parameters([Parameter("image_size", value=256)])[0].successful
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    finally:
        node.stop()
        node.destroy_node()


def test_model_and_image_size_are_checked_together_by_the_node_and_the_launch_arguments() -> None:
    assert parameters_problems({"model": "edgetam", "image_size": 512}) == []
    assert parameters_problems({"model": "sam2.1_hiera_tiny", "image_size": 320}) == []
    (problem,) = parameters_problems({"model": "edgetam", "image_size": 320})
    assert problem.startswith(EDGETAM_SIZE_ERROR) and problem.endswith("got 320 (model edgetam)")
    # a bad value alone is named once, by its own check
    assert parameters_problems({"model": "sam3", "image_size": 320}) == [
        "model: 'sam3' is not one of " + ", ".join(MODEL_NAMES)]
    with pytest.raises(LaunchArgumentError, match="model:=edgetam image_size:=320: EdgeTAM needs"):
        launch_parameters("", {"model": "edgetam", "image_size": "320"})
    assert launch_parameters("", {"model": "edgetam", "image_size": "256"}) == [{"model": "edgetam", "image_size": 256}]

"""The node's building blocks without DDS: latest-frame slot, prompt reading, parameters, output messages."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from geometry_msgs.msg import Point32  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sam2_ros.conversions import image_to_numpy, numpy_to_image  # noqa: E402
from sam2_ros.msg import Prompt, TrackedObject  # noqa: E402
from sam2_ros.node import (  # noqa: E402
    PARAMETERS,
    LatestFrameSlot,
    PromptRequest,
    image_qos,
    parameter_problem,
    resolve_cpu_threads,
)
from sam2_ros.outputs import FrameOutputs, mask_message, objects_message  # noqa: E402
from sam2_ros.overlay import draw_overlay, object_colour  # noqa: E402
from sam2_rt.config import MODEL_NAMES  # noqa: E402
from sam2_rt.tracker import ObjectState, TrackerInputError, TrackResult  # noqa: E402

HEADER = Header(frame_id="camera_optical")
HEADER.stamp.sec, HEADER.stamp.nanosec = 1234, 5678


def test_latest_frame_slot_keeps_only_the_newest_frame_and_reports_each_drop() -> None:
    slot = LatestFrameSlot()
    assert slot.put("frame 0") is False
    assert slot.put("frame 1") is True  # frame 0 was never taken: dropped
    assert slot.put("frame 2") is True
    assert slot.take() == "frame 2"
    assert slot.put("frame 3") is False  # the slot was empty again


def test_latest_frame_slot_close_wakes_a_waiting_worker() -> None:
    slot = LatestFrameSlot()
    taken: list = []
    worker = threading.Thread(target=lambda: taken.append(slot.take()))
    worker.start()
    slot.close()
    worker.join(timeout=5.0)
    assert not worker.is_alive() and taken == [None]


def test_image_qos_is_keep_last_1_with_reliability_by_name() -> None:
    from rclpy.qos import HistoryPolicy, ReliabilityPolicy

    for name, policy in (("best_effort", ReliabilityPolicy.BEST_EFFORT), ("reliable", ReliabilityPolicy.RELIABLE)):
        qos = image_qos(name)
        assert (qos.history, qos.depth, qos.reliability) == (HistoryPolicy.KEEP_LAST, 1, policy)


def prompt(**fields) -> Prompt:
    msg = Prompt(object_id=3, mode=Prompt.MODE_ADD)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def test_prompt_message_becomes_tracker_arguments_in_original_pixels() -> None:
    request = PromptRequest.from_message(
        prompt(points=[Point32(x=10.5, y=20.0), Point32(x=30.0, y=40.0)], labels=[1, 0], has_box=True,
               box=[1.0, 2.0, 50.0, 60.0])
    )
    assert request.object_id == 3 and request.mode == Prompt.MODE_ADD
    np.testing.assert_array_equal(request.points, [[10.5, 20.0], [30.0, 40.0]])
    np.testing.assert_array_equal(request.labels, [1, 0])
    np.testing.assert_array_equal(request.box, [1.0, 2.0, 50.0, 60.0])
    assert request.mask is None


def test_prompt_without_box_flag_ignores_the_box_field_and_reads_a_mask_image() -> None:
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[1:3, 2:5] = 255
    request = PromptRequest.from_message(prompt(box=[1.0, 2.0, 3.0, 4.0], mask=numpy_to_image(mask, "mono8")))
    assert request.box is None and request.points is None and request.labels is None
    np.testing.assert_array_equal(request.mask, mask > 0)


@pytest.mark.parametrize(
    "fields, reason",
    [
        (dict(object_id=0), "object_id 0 is the background"),
        (dict(mode=7), "unknown prompt mode 7"),
        (dict(mask=numpy_to_image(np.zeros((4, 6, 3), np.uint8), "rgb8")), "one channel"),
    ],
)
def test_malformed_prompt_message_is_rejected_with_its_reason(fields: dict, reason: str) -> None:
    with pytest.raises(TrackerInputError, match=reason):
        PromptRequest.from_message(prompt(**fields))


def test_every_parameter_has_a_description_and_constraints_where_values_are_limited() -> None:
    for spec in PARAMETERS:
        descriptor = spec.descriptor()
        assert descriptor.name == spec.name and len(descriptor.description) > 20, spec.name
        if spec.choices:
            assert all(choice in descriptor.additional_constraints for choice in spec.choices)
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert descriptor.integer_range or descriptor.floating_point_range, spec.name
    model = next(spec for spec in PARAMETERS if spec.name == "model")
    assert model.choices == MODEL_NAMES and model.default in MODEL_NAMES


def test_parameter_problem_names_the_choices_and_missing_checkpoints(tmp_path) -> None:
    assert "cpu" in parameter_problem("device", "tpu") and "cuda" in parameter_problem("device", "tpu")
    assert parameter_problem("precision", "fp8") is not None
    assert parameter_problem("backend", "tensorrt") is None
    assert "not found" in parameter_problem("checkpoint", str(tmp_path / "missing.pt"))
    existing = tmp_path / "weights.pt"
    existing.write_bytes(b"")
    assert parameter_problem("checkpoint", str(existing)) is None
    assert parameter_problem("checkpoint", "") is None


def track_result(scale: int = 1) -> TrackResult:
    """Two objects (ids 9 and 4, in that row order) on a (6, 8) * scale frame; object 9 overlaps object 4."""
    logits = torch.full((2, 6, 8), -5.0)
    logits[0, 1:3, 2:5] = 3.0  # object 9: rows 1-2, columns 2-4
    logits[1, 2:5, 4:8] = 1.0  # object 4: rows 2-4, columns 4-7; loses (lower logit) at (2, 4)
    logits = logits.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    masks = logits > 0
    return TrackResult(
        frame_index=7,
        object_ids=[9, 4],
        masks=masks,
        logits=logits,
        low_res_logits=torch.zeros(2, 1, 4, 4),
        ious=torch.tensor([0.9, 0.4]),
        presence=torch.tensor([0.99, 0.2]),
        states=[ObjectState.TRACKING, ObjectState.OCCLUDED],
        boxes=torch.tensor([[2.0, 1.0, 5.0, 3.0], [4.0, 2.0, 8.0, 5.0]]) * scale,
    )


def test_cpu_threads_default_leaves_one_core_for_the_rest_of_the_node() -> None:
    assert [resolve_cpu_threads(0, cores) for cores in (1, 2, 16)] == [1, 1, 15]
    assert resolve_cpu_threads(3, 2) == 3  # an explicit count is taken as it is
    assert resolve_cpu_threads(0) >= 1


def test_objects_message_lists_objects_by_id_with_boxes_areas_and_the_input_header() -> None:
    outputs = FrameOutputs.from_result(track_result())
    msg = objects_message(outputs, HEADER, latency_ns=1_250_000_000, dropped_frames=11)
    assert msg.header == HEADER
    assert (msg.latency.sec, msg.latency.nanosec, msg.dropped_frames) == (1, 250_000_000, 11)
    assert [o.object_id for o in msg.objects] == [4, 9]
    four, nine = msg.objects
    assert four.state == TrackedObject.STATE_OCCLUDED and nine.state == TrackedObject.STATE_TRACKING
    assert (four.score, nine.score) == pytest.approx((0.4, 0.9))
    assert (four.presence, nine.presence) == pytest.approx((0.2, 0.99))
    assert (four.bbox.x_offset, four.bbox.y_offset, four.bbox.width, four.bbox.height) == (4, 2, 4, 3)
    assert (nine.bbox.x_offset, nine.bbox.y_offset, nine.bbox.width, nine.bbox.height) == (2, 1, 3, 2)
    assert (four.mask_area, nine.mask_area) == (12, 6)


def test_mask_message_is_a_mono16_label_image_of_the_input_size_where_the_higher_logit_wins() -> None:
    msg = mask_message(FrameOutputs.from_result(track_result()), HEADER)
    assert (msg.header, msg.encoding, msg.height, msg.width) == (HEADER, "mono16", 6, 8)
    labels = image_to_numpy(msg)
    assert labels[2, 4] == 9 and labels[3, 4] == 4 and labels[0, 0] == 0
    assert set(np.unique(labels)) == {0, 4, 9}


def test_overlay_tints_only_object_pixels_in_the_object_colour() -> None:
    rgb = np.full((60, 80, 3), 100, dtype=np.uint8)
    bgr = draw_overlay(rgb, FrameOutputs.from_result(track_result(scale=10)), alpha=1.0)
    assert bgr.shape == (60, 80, 3) and bgr.dtype == np.uint8
    assert tuple(bgr[40, 60]) == object_colour(4)  # inside object 4, away from box lines and labels
    assert tuple(bgr[55, 5]) == (100, 100, 100)  # background keeps the frame
    assert object_colour(4) != object_colour(9)


def test_overlay_of_a_frame_without_objects_is_the_frame_in_bgr() -> None:
    rgb = np.zeros((3, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    empty = TrackResult(0, [], torch.zeros(0, 3, 4, dtype=torch.bool), torch.zeros(0, 3, 4),
                        torch.zeros(0, 1, 4, 4), torch.zeros(0), torch.zeros(0), [], torch.zeros(0, 4))
    bgr = draw_overlay(rgb, FrameOutputs.from_result(empty))
    assert (bgr[..., 2] == 255).all() and (bgr[..., :2] == 0).all()

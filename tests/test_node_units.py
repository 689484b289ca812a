"""The node's building blocks without DDS: latest-frame slot, prompt reading, parameters, output messages."""
from __future__ import annotations

import threading
import time
from typing import Optional, Tuple

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from geometry_msgs.msg import Point32  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sam2_ros.conversions import image_to_numpy, numpy_to_image  # noqa: E402
from sam2_ros.msg import Prompt, TrackedObject  # noqa: E402
from sam2_ros.node import camera_topic  # noqa: E402
from sam2_ros.outputs import FrameOutputs, mask_message, objects_message  # noqa: E402
from sam2_ros.overlay import draw_overlay, object_colour  # noqa: E402
from sam2_ros.parameters import PARAMETERS, camera_names_problem, parameter_problem  # noqa: E402
from sam2_ros.qos import image_qos  # noqa: E402
from sam2_ros.requests import ObjectBook, PromptRequest, apply_requests  # noqa: E402
from sam2_ros.worker import (  # noqa: E402
    ERROR_WINDOW_S,
    IMAGES_REJECTED,
    RESOLUTION_CHANGES,
    FrameWorker,
    LatestFrames,
    NodeStats,
    resolve_cpu_threads,
    total_snapshot,
)
from sam2_rt.weights.checkpoint import random_model  # noqa: E402
from sam2_rt.modeling.config import MODEL_NAMES  # noqa: E402
from sam2_rt import ObjectState, Tracker, TrackerConfig, TrackerInputError, TrackResult  # noqa: E402

HEADER = Header(frame_id="camera_optical")
HEADER.stamp.sec, HEADER.stamp.nanosec = 1234, 5678


def test_latest_frames_keep_only_the_newest_frame_of_each_camera_and_report_each_drop() -> None:
    frames = LatestFrames()
    assert frames.put("front", "front 0") is False
    assert frames.put("front", "front 1") is True  # front 0 was never taken: dropped
    assert frames.put("rear", "rear 0") is False  # another camera's slot
    assert frames.put("front", "front 2") is True
    assert frames.take() == {"front": "front 2", "rear": "rear 0"}  # every camera with a frame, each round
    assert frames.put("front", "front 3") is False  # the slots were emptied
    frames.release(["front", "rear"])
    assert frames.take() == {"front": "front 3"}


def test_latest_frames_with_a_limit_serve_the_least_recently_served_cameras_and_hold_them_until_released() -> None:
    frames = LatestFrames()
    for name in ("a", "b", "c"):
        frames.put(name, f"{name} 0")
    assert frames.take(limit=2) == {"a": "a 0", "b": "b 0"}  # arrival order among cameras never served
    frames.put("a", "a 1")
    # a and b are held (their frames are being tracked): another thread's round gets c only, not a's new frame
    assert frames.take(limit=2) == {"c": "c 0"}
    frames.put("b", "b 1")
    frames.put("c", "c 1")
    frames.release(["a", "b"])
    # a, b (served by the first take) before c (served by the second), c's new frame waits: it is held
    assert frames.take(limit=2) == {"a": "a 1", "b": "b 1"}
    frames.release(["c"])
    frames.put("a", "a 2")
    assert frames.take(limit=2) == {"c": "c 1"}  # a is held again; c waited longest
    with pytest.raises(ValueError, match="limit"):
        frames.take(limit=0)


def observed_latest_frames(monkeypatch: pytest.MonkeyPatch) -> Tuple[LatestFrames, threading.Event]:
    """LatestFrames, and an event set when a thread starts waiting inside it for a frame.

    The event is set under the slots' lock, which the waiting thread gives up only inside the wait: anything
    the test does with the slots after the event runs while that thread waits.
    """
    started_waiting = threading.Event()

    class ObservedCondition(threading.Condition):
        def wait(self, timeout: Optional[float] = None) -> bool:
            started_waiting.set()
            return super().wait(timeout)

    with monkeypatch.context() as patch:
        patch.setattr(threading, "Condition", ObservedCondition)
        frames = LatestFrames()
    return frames, started_waiting


def test_a_take_waits_while_the_only_waiting_frame_is_of_a_held_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    frames, started_waiting = observed_latest_frames(monkeypatch)
    frames.put("a", "a 0")
    assert frames.take(limit=1) == {"a": "a 0"}
    frames.put("a", "a 1")
    taken: list = []
    other = threading.Thread(target=lambda: taken.append(frames.take(limit=1)))
    other.start()
    assert started_waiting.wait(timeout=10.0)
    assert taken == []  # a is held: its frame waits for the release
    frames.release(["a"])
    other.join(timeout=10.0)
    assert taken == [{"a": "a 1"}]


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_closing_the_slots_wakes_a_worker_that_waits_for_a_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    frames, started_waiting = observed_latest_frames(monkeypatch)
    taken: list = []
    worker = threading.Thread(target=lambda: taken.append(frames.take()))
    worker.start()
    # The worker is inside take(), waiting for a frame (not merely about to call it).
    assert started_waiting.wait(timeout=10.0)
    frames.close()
    worker.join(timeout=10.0)
    assert not worker.is_alive() and taken == [None]


def test_frame_worker_processes_rounds_survives_errors_and_stops_after_the_frame_in_progress() -> None:
    rounds, errors = [], []

    def process(batch):
        rounds.append(batch)
        if "boom" in batch.values():
            raise RuntimeError("one frame failed")

    worker = FrameWorker(process, errors.append)
    worker.start()
    worker.frames.put("a", "boom")
    assert _wait_until(lambda: len(errors) == 1)
    worker.frames.put("a", "fine")
    assert _wait_until(lambda: len(rounds) == 2)
    worker.stop()
    assert rounds == [{"a": "boom"}, {"a": "fine"}] and str(errors[0]) == "one frame failed"
    assert worker.frames.put("a", "late") is False and worker.frames.take() is None


def test_several_worker_threads_share_the_cameras_and_never_process_one_camera_twice_at_a_time() -> None:
    """The two threads go in step: each round waits until the other thread is in a round too (a barrier, so
    both are busy at once and neither can run ahead while the other is not scheduled); each camera gets a new
    frame whenever a round ends, so every camera always has one waiting."""
    lock = threading.Lock()
    busy: set = set()
    overlaps, rounds, threads_used = [], [], set()
    in_step = threading.Barrier(2, timeout=10.0)
    round_done = threading.Event()

    def process(batch):
        with lock:
            overlaps.extend(name for name in batch if name in busy)
            busy.update(batch)
            rounds.append(sorted(batch))
            threads_used.add(threading.current_thread().name)
        try:
            in_step.wait()
        finally:
            with lock:
                busy.difference_update(batch)
            round_done.set()

    def served_frames() -> int:
        with lock:
            return sum(len(r) for r in rounds)

    errors: list = []
    worker = FrameWorker(process, errors.append, threads=2, share=2)
    assert worker.thread_count == 2
    worker.start()
    try:
        frame = 0
        while served_frames() < 40:
            round_done.clear()
            for name in ("a", "b", "c", "d"):
                worker.frames.put(name, frame)
            frame += 1
            assert round_done.wait(timeout=10.0), "no round ended"
        assert errors == []  # no round waited in vain for the other thread (both were busy at once every time)
    finally:
        in_step.abort()  # a thread waiting for the other's next round: it ends its round (the slots close next)
        worker.stop()
    assert overlaps == []  # a camera is in one round at a time
    assert all(len(r) <= 2 for r in rounds)  # each round takes at most its share
    assert threads_used == {"sam2_worker_0", "sam2_worker_1"}
    served = {name: sum(name in r for r in rounds) for name in "abcd"}
    assert max(served.values()) - min(served.values()) <= 2, served  # round-robin: no camera starves
    with pytest.raises(ValueError, match="threads"):
        FrameWorker(process, lambda err: None, threads=0)


def test_diagnostics_faults_cover_a_recent_window_while_totals_stay() -> None:
    now = [100.0]
    stats = NodeStats(clock=lambda: now[0])
    stats.count_error(IMAGES_REJECTED)
    stats.count_error(IMAGES_REJECTED)
    stats.count_error(RESOLUTION_CHANGES)  # counted, but not a fault
    assert stats.recent_faults() == {IMAGES_REJECTED: 2}
    now[0] += ERROR_WINDOW_S + 0.1
    assert stats.recent_faults() == {}
    assert stats.snapshot()[IMAGES_REJECTED] == 2 and stats.snapshot()[RESOLUTION_CHANGES] == 1


def test_total_diagnostics_sum_cameras_and_weight_latency_by_rate() -> None:
    first, second = NodeStats(), NodeStats()
    for latency in (0.1, 0.1):
        first.processed(latency)
    second.processed(0.4)
    second.received(dropped=True)
    total = total_snapshot({"a": first.snapshot(), "b": second.snapshot()})
    assert total["frames_processed"] == 3 and total["frames_dropped"] == 1
    assert total["latency_ms_mean"] == pytest.approx(200.0) and total["latency_ms_max"] == pytest.approx(400.0)


def test_camera_topics_and_names() -> None:
    assert camera_topic("", "image") == "image" and camera_topic("front", "image/compressed") == "front/image/compressed"
    assert camera_names_problem([""]) is None and camera_names_problem(["front", "rear_left"]) is None
    for names, reason in (([], "at least one"), (["front", "front"], "unique"), (["", "rear"], "letters"),
                          (["3d"], "letters"), (["a/b"], "letters")):
        assert reason in camera_names_problem(names), names


@pytest.fixture(scope="module")
def tracker() -> Tracker:
    return Tracker(random_model("sam2.1_hiera_tiny", image_size=128), TrackerConfig(max_objects=3))


def test_object_book_answers_at_once_and_the_stream_follows_once_the_worker_applies_the_requests(tracker) -> None:
    book, stream = ObjectBook(tracker), tracker.create_stream()
    with pytest.raises(TrackerInputError, match="no image received yet"):
        book.submit_prompt(PromptRequest.from_message(prompt(points=[Point32(x=5.0, y=5.0)], labels=[1])))
    assert book.set_frame_size((48, 64)) is None
    assert "object 3 added" in book.submit_prompt(
        PromptRequest.from_message(prompt(points=[Point32(x=5.0, y=5.0)], labels=[1])))
    assert "object 4 added" in book.submit_prompt(PromptRequest.from_message(prompt(object_id=4, has_box=True,
                                                                                    box=[1.0, 1.0, 20.0, 30.0])))
    assert "refined" in book.submit_prompt(PromptRequest.from_message(
        prompt(mode=Prompt.MODE_REFINE, points=[Point32(x=6.0, y=6.0)], labels=[0])))
    assert book.submit_removal([4]) == [3]
    assert stream.object_ids == []  # nothing touched the stream yet
    apply_requests(tracker, stream, book.drain())
    assert stream.object_ids == [3] == book.object_ids()
    tracker.step(stream, np.zeros((48, 64, 3), dtype=np.uint8))
    assert "replaced" in book.submit_prompt(PromptRequest.from_message(
        prompt(mode=Prompt.MODE_REPLACE, points=[Point32(x=9.0, y=9.0)], labels=[1])))
    book.submit_reset()
    assert book.queued() == 1  # the reset makes earlier requests moot
    apply_requests(tracker, stream, book.drain())
    assert stream.object_ids == [] == book.object_ids()


def test_object_book_rejects_without_changing_anything(tracker) -> None:
    book = ObjectBook(tracker, max_queued=4)
    book.set_frame_size((48, 64))
    point = dict(points=[Point32(x=5.0, y=5.0)], labels=[1])
    cases = (
        (prompt(object_id=8, mode=Prompt.MODE_REFINE, **point), "not tracked"),
        (prompt(points=[Point32(x=500.0, y=5.0)], labels=[1]), "outside the 64x48 frame"),
        (prompt(points=[Point32(x=float("nan"), y=5.0)], labels=[1]), "finite"),
    )
    for message, reason in cases:
        with pytest.raises(TrackerInputError, match=reason):
            book.submit_prompt(PromptRequest.from_message(message))
    assert book.object_ids() == [] and book.queued() == 0
    for object_id in (1, 2, 3):
        book.submit_prompt(PromptRequest.from_message(prompt(object_id=object_id, **point)))
    with pytest.raises(TrackerInputError, match="max_objects=3"):
        book.submit_prompt(PromptRequest.from_message(prompt(object_id=9, **point)))
    with pytest.raises(TrackerInputError, match="unknown object ids \\[77\\]"):
        book.submit_removal([1, 77])
    book.submit_prompt(PromptRequest.from_message(prompt(object_id=1, **point)))  # the 4th queued request
    with pytest.raises(TrackerInputError, match="already wait for the next frame"):
        book.submit_prompt(PromptRequest.from_message(prompt(object_id=2, **point)))
    assert book.object_ids() == [1, 2, 3] and book.queued() == 4
    assert book.set_frame_size((48, 64)) is None and book.set_frame_size((24, 32)) == (48, 64)


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

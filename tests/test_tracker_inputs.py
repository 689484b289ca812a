"""Bad frames and prompts get a clear TrackerInputError and leave the stream exactly as it was; frame size
changes are handled; boxes and the label image follow the masks."""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Dict

import numpy as np
import pytest
import torch


from testkit.oracle import build_meta, build_ours_from_meta  # noqa: E402
from sam2_rt.io.synthetic import SyntheticClip  # noqa: E402
from sam2_rt import StreamSnapshot, StreamState, Tracker, TrackerConfig, TrackerInputError  # noqa: E402
from sam2_rt.tracking.transforms import boxes_from_masks, label_image  # noqa: E402

IMAGE_SIZE = 64
HEIGHT, WIDTH = 48, 64
VIDEO = SyntheticClip(HEIGHT, WIDTH, seed=3)


@pytest.fixture(scope="module")
def tracker() -> Tracker:
    model = build_ours_from_meta(build_meta("sam2.1_hiera_tiny", image_size=IMAGE_SIZE, seed=0))
    return Tracker(model, TrackerConfig(max_objects=3))


@pytest.fixture(scope="module")
def first_frame_stream(tracker: Tracker) -> StreamState:
    """A stream with two tracked objects and a pending refinement of object 1."""
    state = tracker.create_stream()
    tracker.add_prompt(state, 1, points=VIDEO.centers(0)[:1], labels=[1], frame_size=(HEIGHT, WIDTH))
    tracker.add_prompt(state, 2, box=VIDEO.boxes(0)[1], frame_size=(HEIGHT, WIDTH))
    tracker.step(state, VIDEO.frame(0))
    tracker.add_prompt(state, 1, points=[[10.0, 12.0], [30.0, 20.0]], labels=[1, 0])
    return state


@pytest.fixture
def started_stream(first_frame_stream: StreamState) -> Callable[[], StreamState]:
    """Fresh copies of `first_frame_stream` (stepping the model once per test would be slow)."""
    return lambda: copy.deepcopy(first_frame_stream)


def assert_same(before: StreamSnapshot, after: StreamSnapshot) -> None:
    assert after == before, f"the stream changed: {before.differences(after)}"


FRAME = VIDEO.frame(1)
BAD_FRAMES: Dict[str, Any] = {
    "grey image (H, W)": FRAME[..., 0],
    "four channels": np.concatenate([FRAME, FRAME[..., :1]], axis=2),
    "float64 numpy": FRAME.astype(np.float64),
    "uint16 numpy": FRAME.astype(np.uint16),
    "CHW numpy": FRAME.transpose(2, 0, 1).copy(),
    "HWC tensor": torch.from_numpy(FRAME),
    "int32 tensor": torch.from_numpy(FRAME).permute(2, 0, 1).int(),
    "batched tensor": torch.from_numpy(FRAME).permute(2, 0, 1)[None],
    "empty frame": np.zeros((0, WIDTH, 3), dtype=np.uint8),
    "python list": FRAME.tolist(),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frame_is_rejected_and_the_stream_is_unchanged(tracker: Tracker, started_stream: Callable[[], StreamState], name: str) -> None:
    state = started_stream()
    before = state.snapshot()
    with pytest.raises(TrackerInputError, match="frame"):
        tracker.step(state, BAD_FRAMES[name])
    assert_same(before, state.snapshot())


def test_the_stream_goes_on_after_rejected_input_as_if_nothing_happened(tracker: Tracker, started_stream: Callable[[], StreamState]) -> None:
    clean, disturbed = started_stream(), started_stream()
    for bad in BAD_FRAMES.values():
        with pytest.raises(TrackerInputError):
            tracker.step(disturbed, bad)
    for prompt in BAD_PROMPTS.values():
        with pytest.raises(TrackerInputError):
            prompt(tracker, disturbed)
    for frame in VIDEO.frames(2, start=1):
        expected, got = tracker.step(clean, frame), tracker.step(disturbed, frame)
        assert got.object_ids == expected.object_ids == [1, 2]
        assert torch.equal(got.low_res_logits, expected.low_res_logits)


def _mask(height: int = HEIGHT, width: int = WIDTH, dtype: Any = bool) -> np.ndarray:
    mask = np.zeros((height, width), dtype=dtype)
    mask[5:15, 5:20] = 1
    return mask


# Each entry adds a bad prompt (or removes unknown ids) and names what the message must mention.
BAD_PROMPTS: Dict[str, Callable[[Tracker, StreamState], None]] = {
    "point right of the frame": lambda t, s: t.add_prompt(s, 1, points=[[WIDTH + 1.0, 5.0]], labels=[1]),
    "negative coordinate": lambda t, s: t.add_prompt(s, 1, points=[[-0.5, 5.0]], labels=[1]),
    "NaN coordinate": lambda t, s: t.add_prompt(s, 1, points=[[float("nan"), 5.0]], labels=[1]),
    "infinite coordinate": lambda t, s: t.add_prompt(s, 1, points=[[5.0, float("inf")]], labels=[1]),
    "empty point list": lambda t, s: t.add_prompt(s, 1, points=np.zeros((0, 2)), labels=np.zeros(0)),
    "complex coordinate": lambda t, s: t.add_prompt(s, 1, points=[[5.0 + 1j, 5.0]], labels=[1]),
    "complex box": lambda t, s: t.add_prompt(s, 1, box=np.array([5.0, 5.0, 20.0, 30.0]) * (1 + 0j)),
    "ragged points": lambda t, s: t.add_prompt(s, 1, points=[[5.0, 5.0], [6.0]], labels=[1, 1]),
    "text coordinate": lambda t, s: t.add_prompt(s, 1, points=[["left", 5.0]], labels=[1]),
    "points of shape (N, 3)": lambda t, s: t.add_prompt(s, 1, points=[[1.0, 2.0, 3.0]], labels=[1]),
    "label 2": lambda t, s: t.add_prompt(s, 1, points=[[5.0, 5.0]], labels=[2]),
    "label -1": lambda t, s: t.add_prompt(s, 1, points=[[5.0, 5.0]], labels=[-1]),
    "label 0.5": lambda t, s: t.add_prompt(s, 1, points=[[5.0, 5.0]], labels=[0.5]),
    "fewer labels than points": lambda t, s: t.add_prompt(s, 1, points=[[5.0, 5.0], [6.0, 6.0]], labels=[1]),
    "points without labels": lambda t, s: t.add_prompt(s, 1, points=[[5.0, 5.0]]),
    "no prompt at all": lambda t, s: t.add_prompt(s, 1),
    "box with x1 <= x0": lambda t, s: t.add_prompt(s, 1, box=[20.0, 5.0, 20.0, 30.0]),
    "box with y1 < y0": lambda t, s: t.add_prompt(s, 1, box=[5.0, 30.0, 20.0, 10.0]),
    "box outside the frame": lambda t, s: t.add_prompt(s, 1, box=[5.0, 5.0, WIDTH + 10.0, 20.0]),
    "box NaN": lambda t, s: t.add_prompt(s, 1, box=[5.0, float("nan"), 20.0, 30.0]),
    "box of 3 numbers": lambda t, s: t.add_prompt(s, 1, box=[5.0, 5.0, 20.0]),
    "mask of the wrong size": lambda t, s: t.add_prompt(s, 1, mask=_mask(HEIGHT + 1, WIDTH)),
    "float mask": lambda t, s: t.add_prompt(s, 1, mask=_mask(dtype=np.float32)),
    "integer mask with a 2": lambda t, s: t.add_prompt(s, 1, mask=_mask(dtype=np.uint8) * 2),
    "mask and points together": lambda t, s: t.add_prompt(s, 1, mask=_mask(), points=[[5.0, 5.0]], labels=[1]),
    "object id 0": lambda t, s: t.add_prompt(s, 0, points=[[5.0, 5.0]], labels=[1]),
    "negative object id": lambda t, s: t.add_prompt(s, -3, points=[[5.0, 5.0]], labels=[1]),
    "object id True": lambda t, s: t.add_prompt(s, True, points=[[5.0, 5.0]], labels=[1]),
    "object id 1.0": lambda t, s: t.add_prompt(s, 1.0, points=[[5.0, 5.0]], labels=[1]),  # type: ignore[arg-type]
    "bad frame_size": lambda t, s: t.add_prompt(s, 1, points=[[5.0, 5.0]], labels=[1], frame_size=(0, 10)),
    "unknown id on remove": lambda t, s: t.remove_objects(s, [2, 7]),
}


@pytest.mark.parametrize("name", list(BAD_PROMPTS))
def test_bad_prompt_is_rejected_and_the_stream_is_unchanged(tracker: Tracker, started_stream: Callable[[], StreamState], name: str) -> None:
    state = started_stream()
    before = state.snapshot()
    with pytest.raises(TrackerInputError) as error:
        BAD_PROMPTS[name](tracker, state)
    assert str(error.value)  # a message, not a bare exception
    assert_same(before, state.snapshot())


def test_more_than_max_objects_is_rejected_and_the_stream_is_unchanged(tracker: Tracker, started_stream: Callable[[], StreamState]) -> None:
    state = started_stream()
    tracker.add_prompt(state, 3, points=[[5.0, 5.0]], labels=[1])  # the third and last allowed object
    before = state.snapshot()
    with pytest.raises(TrackerInputError, match="max_objects=3"):
        tracker.add_prompt(state, 4, points=[[5.0, 5.0]], labels=[1])
    assert_same(before, state.snapshot())
    tracker.add_prompt(state, 3, box=[1.0, 1.0, 9.0, 9.0])  # a known id is still fine
    assert tracker.step(state, VIDEO.frame(1)).object_ids == [1, 2, 3]


def test_prompt_before_the_first_frame_needs_the_frame_size(tracker: Tracker) -> None:
    state = tracker.create_stream()
    with pytest.raises(TrackerInputError, match="frame_size"):
        tracker.add_prompt(state, 1, points=[[5.0, 5.0]], labels=[1])
    assert state.object_ids == []
    tracker.add_prompt(state, 1, points=[[5.0, 5.0]], labels=[1], frame_size=(HEIGHT, WIDTH))
    assert state.object_ids == [1] and tracker.step(state, VIDEO.frame(0)).object_ids == [1]


def test_removing_pending_and_tracked_objects_and_reset(tracker: Tracker, started_stream: Callable[[], StreamState]) -> None:
    state = started_stream()
    tracker.add_prompt(state, 3, box=[5.0, 5.0, 20.0, 20.0])
    assert state.object_ids == [1, 2, 3]
    tracker.remove_objects(state, [3, 1])
    assert state.object_ids == [2] and state.pending_ids == []
    result = tracker.step(state, VIDEO.frame(1))
    assert result.object_ids == [2] and result.masks.shape == (1, HEIGHT, WIDTH)
    tracker.reset(state)
    assert state.object_ids == [] and state.frame_index == 0 and state.frame_size is None
    empty = tracker.step(state, VIDEO.frame(2))
    assert empty.object_ids == [] and empty.masks.shape == (0, HEIGHT, WIDTH)
    assert empty.label_image().shape == (HEIGHT, WIDTH) and not empty.label_image().any()


def test_frame_size_change_mid_stream_keeps_tracking_and_rescales_pending_prompts(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    """Memory is at the model resolution, so objects go on; outputs come at the new size; a prompt given
    in the old frame's pixels lands at the same relative position of the new frame."""
    small = VIDEO.frames(3)
    large = [np.ascontiguousarray(np.repeat(np.repeat(f, 2, axis=0), 2, axis=1)) for f in small]
    changed, reference = tracker.create_stream(), tracker.create_stream()
    tracker.add_prompt(changed, 1, points=VIDEO.centers(0)[:1], labels=[1], frame_size=(HEIGHT, WIDTH))
    tracker.add_prompt(reference, 1, points=VIDEO.centers(0)[:1] * 2, labels=[1], frame_size=(2 * HEIGHT, 2 * WIDTH))
    tracker.step(changed, small[0])
    tracker.step(reference, large[0])
    tracker.add_prompt(changed, 2, box=VIDEO.boxes(1)[1])  # pixels of the small frame
    tracker.add_prompt(reference, 2, box=VIDEO.boxes(1)[1] * 2)
    with caplog.at_level(logging.WARNING, logger="sam2_rt.tracking.tracker"):
        got = tracker.step(changed, large[1])
    assert "frame size changed" in caplog.text
    expected = tracker.step(reference, large[1])
    assert changed.frame_size == (2 * HEIGHT, 2 * WIDTH)
    assert got.object_ids == [1, 2] and got.masks.shape == (2, 2 * HEIGHT, 2 * WIDTH)
    # object 2's prompt was rescaled: same model-space prompt as the reference stream's
    assert torch.equal(got.low_res_logits[1], expected.low_res_logits[1])
    assert tracker.step(changed, large[2]).masks.shape == (2, 2 * HEIGHT, 2 * WIDTH)


def test_boxes_enclose_the_masks_and_are_zero_for_empty_masks() -> None:
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 5, 7] = True
    boxes = boxes_from_masks(masks)
    assert boxes.tolist() == [[2.0, 1.0, 5.0, 3.0], [7.0, 5.0, 8.0, 6.0], [0.0, 0.0, 0.0, 0.0]]


def test_label_image_gives_each_pixel_the_object_with_the_highest_logit() -> None:
    logits = torch.full((2, 2, 3), -5.0)
    logits[0, 0, :2] = 1.0
    logits[1, 0, 1:] = 2.0
    logits[0, 1, 0] = 3.0
    labels = label_image(logits, torch.tensor([7, 300]))
    assert labels.dtype == torch.int32
    assert labels.tolist() == [[7, 300, 300], [7, 0, 0]]


def test_track_result_outputs_have_the_documented_shapes(tracker: Tracker, started_stream: Callable[[], StreamState]) -> None:
    state = started_stream()
    chw = torch.from_numpy(VIDEO.frame(1)).permute(2, 0, 1)
    result = tracker.step(state, chw)  # a CHW uint8 tensor
    low = IMAGE_SIZE // 4
    assert result.frame_index == 1 and result.object_ids == [1, 2]
    assert result.masks.shape == (2, HEIGHT, WIDTH) and result.masks.dtype == torch.bool
    assert result.low_res_logits.shape == (2, 1, low, low)
    assert result.ious.shape == result.presence.shape == (2,)
    assert result.boxes.shape == (2, 4) and len(result.states) == 2
    assert torch.equal(result.boxes, boxes_from_masks(result.masks))
    labels = result.label_image()
    assert labels.shape == (HEIGHT, WIDTH) and set(labels.unique().tolist()) <= {0, 1, 2}
    # the same frame as float in [0, 1], on the same stream: the model runs on it and sees the same image
    as_float = tracker.step(started_stream(), chw / 255.0)
    assert as_float.object_ids == [1, 2]
    assert torch.equal(as_float.low_res_logits, result.low_res_logits) and torch.equal(as_float.masks, result.masks)


def test_a_failing_model_call_leaves_the_stream_unchanged(
    tracker: Tracker, started_stream: Callable[[], StreamState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. running out of memory mid-frame: the objects, their memory and the pending prompts stay."""
    state, clean = started_stream(), started_stream()
    before = state.snapshot()

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of memory")

    with monkeypatch.context() as patch:
        patch.setattr(tracker.model, "decode", out_of_memory)
        with pytest.raises(RuntimeError, match="out of memory"):
            tracker.step(state, VIDEO.frame(1))
    assert_same(before, state.snapshot())
    assert torch.equal(tracker.step(state, VIDEO.frame(1)).low_res_logits,
                       tracker.step(clean, VIDEO.frame(1)).low_res_logits)


@pytest.mark.parametrize("native", [False, True], ids=["emulated", "native"])
def test_reduced_precision_on_a_cpu_without_it_warns(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, native: bool
) -> None:
    import sam2_rt.tracking.tracker as tracker_module

    monkeypatch.setattr(tracker_module, "cpu_has_native", lambda precision: native)
    with caplog.at_level(logging.WARNING, logger="sam2_rt.tracking.tracker"):
        Tracker(tracker.model, TrackerConfig(precision="bf16"))
        Tracker(tracker.model, TrackerConfig(precision="fp32"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == (0 if native else 1), warnings
    if warnings:
        assert "precision='bf16'" in warnings[0] and "slower than fp32" in warnings[0]


@pytest.mark.parametrize("field, value", [("use_mask_input_as_output_without_sam", False),
                                          ("memory_temporal_stride_for_eval", 2),
                                          ("max_cond_frames_in_attn", 2)])
def test_a_model_configuration_the_tracker_does_not_implement_is_refused(tracker: Tracker, field: str,
                                                                         value: Any) -> None:
    import dataclasses

    model = copy.copy(tracker.model)  # shallow: the same weights, another config
    model.config = dataclasses.replace(tracker.model.config, **{field: value})
    with pytest.raises(ValueError, match=field):
        Tracker(model, TrackerConfig(max_objects=3))

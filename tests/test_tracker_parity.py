"""The streaming tracker equals Meta's SAM2VideoPredictor (sam2==1.1.0) frame by frame, object by object.

One 60-frame run of a synthetic video (shapes moving over a textured background) covers issue 4's
scenarios: one click, one box, three objects prompted on frame 0, a fourth object added at frame 10, a
refining click at frame 20, an object removed at frame 30; plus a mask prompt on a known object, a
box+click refinement, an empty-mask refinement (an absent frame) and a new object from a mask after the
removal.

Meta is driven like a stream by `bench.track.meta_stream` (propagate up to the frame of a prompt, add it,
go on; refinements are added after their frame was tracked) on exactly the frames our tracker
preprocessed: its init_state runs on a one-image folder, then its images, frame count and video size are
replaced by ours.

Weights: testkit/oracle.py's seeded random weights with `bench.track.make_objects_visible` applied: with
the plain random draw every object is "absent" on every frame (constant -1024 masks, a vacuous
comparison); shifted, objects are present except where a prompt says otherwise.
"""

from __future__ import annotations

from typing import List

import numpy as np
import pytest
import torch


from bench.track import (  # noqa: E402
    Prompt,
    Schedule,
    make_objects_visible,
    mask_iou,
    meta_stream,
    ours_stream,
)
from testkit.oracle import RECURRENT_BOUND, build_meta, build_ours_from_meta  # noqa: E402
from sam2_rt import ObjectState, Tracker, TrackerConfig  # noqa: E402
from sam2_rt.io.synthetic import SyntheticClip  # noqa: E402
from sam2_rt.tracking.transforms import preprocess  # noqa: E402

IMAGE_SIZE = 256
NUM_FRAMES = 60
FRAME_SIZE = (144, 192)  # H, W
IOU_MIN = 0.999
# Meta's code sums in other orders than ours: the same kind of difference as another thread count, which over
# this run moves ours by 5.5e-5 of the largest logit and Meta's by 5.4e-5 (tests/noise_floor.py --only
# tracker_parity; bench/RESULTS.md), inside oracle.py's floor: the bound of every recurrent comparison.
LOGIT_RTOL = RECURRENT_BOUND


def build_models(name: str = "sam2.1_hiera_tiny"):
    meta = build_meta(name, image_size=IMAGE_SIZE, seed=0)
    make_objects_visible(meta)
    return meta, build_ours_from_meta(meta)


def scenario_schedule(clip: SyntheticClip) -> Schedule:
    """Issue 4's scenarios plus mask prompts; at most four objects at a time (Meta's cost grows with each)."""
    centers = np.stack([clip.centers(i) for i in range(NUM_FRAMES)])  # (T, K, 2)
    boxes = np.stack([clip.boxes(i) for i in range(NUM_FRAMES)])  # (T, K, 4)
    height, width = FRAME_SIZE

    def disc_mask(center: np.ndarray, radius: float) -> np.ndarray:
        ys, xs = np.mgrid[0:height, 0:width]
        return (xs - center[0]) ** 2 + (ys - center[1]) ** 2 <= radius**2

    def click(frame: int, shape: int, offset=(0.0, 0.0)) -> dict:
        return dict(points=centers[frame, shape:shape + 1] + np.array(offset), labels=np.array([1]))

    return (
        Schedule()
        .on(0,
            Prompt(1, **click(0, 0)),  # one click
            Prompt(2, box=boxes[0, 1]),  # one box
            Prompt(3, points=np.stack([centers[0, 2], centers[0, 0]]), labels=np.array([1, 0])))  # 3 on frame 0
        .on(10, Prompt(4, **click(10, 3)))  # a fourth object mid-stream
        .on(15, Prompt(4, mask=disc_mask(centers[15, 3], 13.3)))  # a mask prompt on a known object
        .on(20, Prompt(1, **click(20, 0, offset=(3.0, -2.0))))  # refining click on a known object
        .on(25,
            Prompt(3, points=centers[25, 2:3], labels=np.array([1]), box=boxes[25, 2]),  # box + click refinement
            Prompt(2, mask=np.zeros((height, width), dtype=bool)))  # empty mask: absent on this frame
        .on(30, Prompt(2, remove=True))  # removal
        .on(40, Prompt(5, mask=disc_mask(centers[40, 1], 17.6)))  # a new object from a mask, in the freed row
    )


@pytest.mark.slow
def test_tracker_matches_meta_every_frame_and_object_over_60_frames() -> None:
    meta, ours = build_models()
    clip = SyntheticClip(*FRAME_SIZE, seed=1)
    frames = list(clip.frames(NUM_FRAMES))
    schedule = scenario_schedule(clip)
    with torch.inference_mode():
        images = torch.cat([preprocess(frame, IMAGE_SIZE, torch.device("cpu")) for frame in frames])
    reference = meta_stream(meta, images, FRAME_SIZE, schedule)

    failures: List[str] = []
    worst_iou, worst_ratio = 1.0, 0.0
    states_seen = set()
    tracker = Tracker(ours, TrackerConfig())
    for frame_index, result, _, _ in ours_stream(tracker, frames, schedule):
        expected = next(reference)
        assert expected.frame_index == frame_index
        assert result.object_ids == expected.object_ids, f"frame {frame_index}"
        ious = mask_iou(result.masks, expected.logits > 0)
        logit_diff = (result.logits - expected.logits).abs().flatten(1).amax(dim=1)
        logit_tol = LOGIT_RTOL * expected.logits.abs().flatten(1).amax(dim=1).clamp(min=1.0)
        scores = torch.logit(result.presence.double()).float()
        score_diff = (scores - expected.object_scores).abs()
        score_tol = LOGIT_RTOL * expected.object_scores.abs().clamp(min=1.0)
        states_seen.update(result.states)
        for i, obj_id in enumerate(result.object_ids):
            worst_iou = min(worst_iou, ious[i].item())
            worst_ratio = max(worst_ratio, (logit_diff[i] / logit_tol[i]).item())
            if ious[i] < IOU_MIN or logit_diff[i] > logit_tol[i] or score_diff[i] > score_tol[i]:
                failures.append(
                    f"frame {frame_index} object {obj_id}: IoU {ious[i]:.5f}, |logit diff| {logit_diff[i]:.2e} "
                    f"(tol {logit_tol[i]:.2e}), |score diff| {score_diff[i]:.2e}"
                )
    assert not failures, f"{len(failures)} mismatches, first: {failures[:5]}"
    # the run saw real masks and an absent frame, so the comparison was not vacuous
    assert ObjectState.TRACKING in states_seen and ObjectState.OCCLUDED in states_seen, states_seen
    print(f"worst IoU {worst_iou:.6f}, worst logit diff / tolerance {worst_ratio:.3f}")

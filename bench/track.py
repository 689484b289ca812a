"""Streaming tracker benchmark: ours vs Meta's SAM2VideoPredictor on the same frames and seeded weights.

    python bench/track.py --video synthetic --frames 60 --image-size 512 --compare meta
    python bench/track.py --video clip.mp4 --frames 30 --objects 8 --precision bf16
    python bench/track.py --motion samurai --frames 40 --image-size 256 --compare meta

Both models get the same weights: testkit/oracle.py's seeded random ones with `make_objects_visible`
applied, or Meta's checkpoint with `--checkpoint`. Both get the same preprocessed frames: Meta's state is
created by its own `init_state` on a one-image folder, then its preloaded images, frame count and video
size are replaced with ours (see `meta_stream`). Meta is driven like a stream: frames are propagated up to
the one that carries a prompt, the prompt is added, and propagation goes on. `--video synthetic` is a
480x640 clip of moving shapes (`sam2_rt.io.synthetic`); K clicks are spread over the first frame (`click_grid`).

Prints one JSON line per frame, then a summary line with the keys of issue 4. Times are wall seconds per
frame (ours: `Tracker.step` from the raw frame, preprocessing included; Meta: its prompt calls of that frame
plus `propagate_in_video` up to that frame's output, on frames it preloaded and preprocessed beforehand).
min_iou / max_logit_diff compare our masks / frame-resolution logits with Meta's fp32 ones, also with
`--precision bf16|fp16` (Meta's fp32 output equals our fp32 one to ~1e-4, so this is the error of the
reduced precision).

`--motion samurai` tracks with SAMURAI's motion model; `--compare meta` then compares with SAMURAI's own video
predictor (absolutely-not-samurai, build/refs/samurai, in its own process: testkit/samurai_reference.py), which
tracks one object: it runs once per object, and each of our objects (tracked together) is compared with it
tracked alone; meta_s is then the sum of those runs' seconds for the frame.

`--model edgetam` tracks with our EdgeTAM; its weights are testkit/edgetam_reference.py's seeded ones (objects
present, random BatchNorm statistics) or `--checkpoint`'s. `--compare meta` then compares with Meta's EdgeTAM video
predictor (edgetam-dimos, build/refs/edgetam, in its own process: testkit/edgetam_reference.py), which tracks one
object correctly: like SAMURAI's, it runs once per object and meta_s sums those runs' seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sam2_rt import Tracker, TrackerConfig  # noqa: E402
from sam2_rt.modeling.config import EDGETAM_NAME, get_config  # noqa: E402
from sam2_rt.modeling.factory import create_model  # noqa: E402
from sam2_rt.tracking.transforms import preprocess  # noqa: E402
from sam2_rt.io.synthetic import SyntheticClip  # noqa: E402
from sam2_rt.io.video import open_source  # noqa: E402
from sam2_rt.tracking.motion import MOTION_NAMES, SamuraiConfig  # noqa: E402


# With testkit/oracle.py's random weights every object scores about -0.5 on every frame ("absent"), so all
# masks would be the constant -1024 and a comparison would test nothing. Raising the object-score head's
# output bias by this makes objects present (real masks) unless a prompt says otherwise.
OBJECT_SCORE_SHIFT = 4.0


def make_objects_visible(meta: torch.nn.Module) -> None:
    """Shift Meta's random-weight object scores by OBJECT_SCORE_SHIFT (before copying them into ours)."""
    with torch.no_grad():
        meta.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += OBJECT_SCORE_SHIFT


def click_grid(num_clicks: int, height: int, width: int) -> np.ndarray:
    """num_clicks points spread over a frame on a near-square grid, (K, 2) float x, y."""
    cols = int(np.ceil(np.sqrt(num_clicks)))
    rows = int(np.ceil(num_clicks / cols))
    points = [((c + 0.5) * width / cols, (r + 0.5) * height / rows) for r in range(rows) for c in range(cols)]
    return np.array(points[:num_clicks], dtype=np.float32)


# --------------------------------------------------------------------------- Meta driven as a stream


@dataclass
class Prompt:
    """One stream event on a frame: add / refine an object (points+labels, box or mask) or remove it."""

    object_id: int
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    remove: bool = False


@dataclass
class Schedule:
    """Prompts per frame index (applied before that frame is tracked)."""

    events: Dict[int, List[Prompt]] = field(default_factory=dict)

    def on(self, frame_index: int, *prompts: Prompt) -> "Schedule":
        self.events.setdefault(frame_index, []).extend(prompts)
        return self


class MetaFrame(NamedTuple):
    """Meta's output for one frame (N objects, frame H x W)."""

    frame_index: int
    object_ids: List[int]
    logits: torch.Tensor  # (N, H, W) float32 mask logits at the frame resolution
    object_scores: torch.Tensor  # (N,) object score logits
    seconds: float  # wall time Meta spent on this frame


def meta_stream(
    predictor: torch.nn.Module, images: torch.Tensor, frame_size: Tuple[int, int], schedule: Schedule
) -> Iterator[MetaFrame]:
    """Drive Meta's SAM2VideoPredictor like a stream; yield a MetaFrame per frame.

    Arguments:
      predictor: Meta's SAM2VideoPredictor (fp32); its add_all_frames_to_correct_as_cond is set to True so
        that a prompt on a known object makes a conditioning frame, as in our tracker.
      images: (T, 3, S, S) float frames exactly as our tracker preprocessed them.
      frame_size: (H, W) of the original frames.
      schedule: the prompts; new ids start objects, known ids refine them, remove=True removes.
    Yields:
      per frame a MetaFrame; its time counts Meta's prompt calls on that frame and the propagation up
      to its output.

    A new object is added before its frame is tracked (an initial conditioning frame). A refinement is
    added after the frame was tracked (Meta then uses memory, the clicks and the tracked logits).
    """
    from PIL import Image

    predictor.add_all_frames_to_correct_as_cond = True
    num_frames = images.shape[0]
    height, width = frame_size
    with tempfile.TemporaryDirectory() as folder:
        Image.new("RGB", (8, 8)).save(Path(folder) / "00000.jpg")
        state = predictor.init_state(folder)
    state["images"] = images
    state["num_frames"] = num_frames
    state["video_height"], state["video_width"] = height, width
    state["cached_features"] = {}

    def add(frame_index: int, prompt: Prompt) -> Tuple[List[int], torch.Tensor]:
        if prompt.mask is not None:
            _, ids, logits = predictor.add_new_mask(state, frame_index, prompt.object_id, prompt.mask)
        else:
            _, ids, logits = predictor.add_new_points_or_box(
                state, frame_index, prompt.object_id, points=prompt.points, labels=prompt.labels, box=prompt.box
            )
        return list(ids), logits

    def propagate(first: int, last: int, carry: float) -> Iterator[MetaFrame]:
        # `carry`: seconds of prompt calls made before this propagation, counted in its first frame
        start = time.perf_counter()
        for index, ids, logits in predictor.propagate_in_video(
            state, start_frame_idx=first, max_frame_num_to_track=last - first
        ):
            seconds = time.perf_counter() - start + carry
            yield MetaFrame(index, list(ids), logits[:, 0], object_scores(index), seconds)
            carry = 0.0
            start = time.perf_counter()

    def object_scores(frame_index: int) -> torch.Tensor:
        """(N,) object score logits of every object on a frame, from Meta's per-object output dicts."""
        scores = []
        for obj_idx in range(len(state["obj_ids"])):
            stores = (state["temp_output_dict_per_obj"][obj_idx], state["output_dict_per_obj"][obj_idx])
            outputs = [store[key].get(frame_index) for store in stores for key in ("cond_frame_outputs", "non_cond_frame_outputs")]
            scores.append(next(out for out in outputs if out is not None)["object_score_logits"].reshape(()))
        return torch.stack(scores)

    frame_index = 0
    carry = 0.0
    event_frames = sorted(schedule.events) + [num_frames]
    # (Meta's public methods run in inference mode themselves, generators included.)
    for event_frame in event_frames:
        if event_frame > frame_index:
            if not state["obj_ids"]:
                raise ValueError("Meta cannot track frames without objects")
            yield from propagate(frame_index, event_frame - 1, carry)
            carry = 0.0
        frame_index = event_frame
        if event_frame >= num_frames:
            break
        start = time.perf_counter()
        refinements = []
        for prompt in schedule.events[event_frame]:
            if prompt.remove:
                predictor.remove_object(state, prompt.object_id, strict=True)
            elif prompt.object_id in state["obj_ids"]:
                refinements.append(prompt)
            else:
                add(event_frame, prompt)
        carry += time.perf_counter() - start
        if not refinements:
            continue
        # a refinement: track this frame first, then add the prompt on the tracked frame
        (tracked,) = propagate(event_frame, event_frame, carry)
        start = time.perf_counter()
        for prompt in refinements:
            ids, logits = add(event_frame, prompt)
        seconds = tracked.seconds + time.perf_counter() - start
        yield MetaFrame(event_frame, ids, logits[:, 0], object_scores(event_frame), seconds)
        carry = 0.0
        frame_index = event_frame + 1


def ours_stream(
    tracker: Tracker, frames: Sequence[np.ndarray], schedule: Schedule
) -> Iterator[Tuple[int, object, float, int]]:
    """Run our tracker over frames; yield (frame_index, TrackResult, seconds, state bytes after the frame)."""
    state = tracker.create_stream()
    height, width = frames[0].shape[:2]
    for frame_index, frame in enumerate(frames):
        start = time.perf_counter()
        for prompt in schedule.events.get(frame_index, []):
            if prompt.remove:
                tracker.remove_objects(state, [prompt.object_id])
            else:
                tracker.add_prompt(
                    state, prompt.object_id, points=prompt.points, labels=prompt.labels, box=prompt.box,
                    mask=prompt.mask, frame_size=(height, width),
                )
        result = tracker.step(state, frame)
        seconds = time.perf_counter() - start
        yield frame_index, result, seconds, state.state_nbytes()


def alone_stream(run_in_own_process, inputs: Dict[str, object], images: torch.Tensor, points: np.ndarray
                 ) -> Iterator[MetaFrame]:
    """A reference that tracks one object (SAMURAI's, Meta's EdgeTAM), run in its own process once per click on
    `images` with `inputs` (its weights, sizes...); per frame a MetaFrame of every object: its logits (and object
    score, NaN where the reference reports none) from the run that tracked it alone, the runs' seconds summed."""
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for point in points:
            runs.append(run_in_own_process(dict(inputs, images=images, point=tuple(float(v) for v in point)),
                                           Path(folder)))
    nan = torch.tensor(float("nan"))
    for index in range(images.shape[0]):
        yield MetaFrame(index, list(range(1, len(points) + 1)), torch.stack([run["logits"][index] for run in runs]),
                        torch.stack([run["object_scores"][index] if "object_scores" in run else nan for run in runs]),
                        sum(run["seconds"][index] for run in runs))


def samurai_stream(model: torch.nn.Module, images: torch.Tensor, frame_size: Tuple[int, int], points: np.ndarray,
                   image_size: int, memory_iou_threshold: float) -> Iterator[MetaFrame]:
    """SAMURAI's video predictor on `images` with `model`'s weights, one run per click (alone_stream)."""
    from testkit.samurai_reference import run_in_own_process

    inputs = {"state_dict": model.state_dict(), "image_size": image_size, "frame_size": frame_size,
              "memory_bank_iou_threshold": memory_iou_threshold}
    return alone_stream(run_in_own_process, inputs, images, points)


def edgetam_stream(weights: Dict[str, torch.Tensor], images: torch.Tensor, frame_size: Tuple[int, int],
                   points: np.ndarray, image_size: int) -> Iterator[MetaFrame]:
    """Meta's EdgeTAM video predictor on `images` with `weights` (a state_dict under Meta's keys: our EdgeTAMModel's
    before a Tracker folds its trunk), one run per click (alone_stream)."""
    from testkit.edgetam_reference import run_in_own_process

    inputs = {"state_dict": weights, "image_size": image_size, "frame_size": frame_size}
    return alone_stream(run_in_own_process, inputs, images, points)


def build_models(args: argparse.Namespace) -> Tuple[Optional[torch.nn.Module], torch.nn.Module]:
    """(Meta's SAM2VideoPredictor, or None for EdgeTAM; ours) with the same weights: --checkpoint's, or seeded."""
    from testkit.oracle import build_meta, build_ours_from_meta

    state_dict = None
    if args.checkpoint is not None:
        state_dict = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model"]
    if args.model == EDGETAM_NAME:  # Meta's EdgeTAM cannot share this process with sam2==1.1.0: no Meta model here
        from testkit.edgetam_reference import seeded_edgetam

        if state_dict is None:
            return None, seeded_edgetam(args.image_size, args.seed)
        ours = create_model(get_config(args.model, args.image_size))
        ours.load_state_dict(state_dict, strict=True)
        return None, ours.eval()
    meta = build_meta(args.model, image_size=args.image_size, seed=args.seed)
    if state_dict is not None:
        meta.load_state_dict(state_dict, strict=True)
    else:
        make_objects_visible(meta)
    return meta, build_ours_from_meta(meta)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-object IoU of two (N, H, W) bool mask stacks; 1.0 where both are empty."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


# --------------------------------------------------------------------------- command line


def rss_mib() -> float:
    """Resident set size of this process in MiB (from /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default="synthetic",
                        help="'synthetic', or any input of sam2_rt.io.video.open_source (file, folder, rosbag2, camera)")
    parser.add_argument("--frames", type=int, default=60, help="number of frames to track")
    parser.add_argument("--image-size", type=int, default=1024, help="model input side S")
    parser.add_argument("--model", default="sam2.1_hiera_tiny", help="model name (sam2_rt.modeling.config.MODEL_NAMES)")
    parser.add_argument("--objects", type=int, default=1, help="K clicks spread over the first frame")
    parser.add_argument("--compare", choices=("meta", "none"), default="meta", help="also run Meta's predictor")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="our precision")
    parser.add_argument("--checkpoint", default=None, help="Meta's .pt for both models (default: seeded random)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--motion", choices=MOTION_NAMES, default="none",
                        help="our motion model; samurai compares with SAMURAI's reference (one run per object)")
    parser.add_argument("--keep-every-memory", action="store_true",
                        help="motion samurai: accept every tracked frame into memory (both memory thresholds -inf), "
                             "to time the motion model at plain SAM 2's memory size (with random weights few frames "
                             "pass SAMURAI's thresholds, and a smaller memory is cheaper)")
    args = parser.parse_args(argv)

    rss_start = rss_mib()
    if args.video == "synthetic":
        frames = list(SyntheticClip(480, 640, seed=args.seed).frames(args.frames))
    else:
        with open_source(args.video) as source:
            frames = [frame.rgb for frame in itertools.islice(source, args.frames)]
    height, width = frames[0].shape[:2]
    if args.model == EDGETAM_NAME and args.motion == "samurai" and args.compare == "meta":
        parser.error("SAMURAI's reference tracks with SAM 2.1, not EdgeTAM (use --compare none)")
    meta, ours = build_models(args)
    # Meta's keys: the Tracker folds EdgeTAM's RepViT trunk in place (other keys), so its weights are taken before.
    weights = {key: value.clone() for key, value in ours.state_dict().items()} if meta is None else None
    keep = float("-inf") if args.keep_every_memory else None
    samurai = SamuraiConfig() if keep is None else SamuraiConfig(memory_bank_iou_threshold=keep,
                                                                 memory_bank_obj_score_threshold=keep)
    tracker = Tracker(ours, TrackerConfig(max_objects=max(16, args.objects), precision=args.precision,
                                          motion=args.motion, samurai=samurai))

    points = click_grid(args.objects, height, width)
    schedule = Schedule().on(
        0, *(Prompt(object_id=k + 1, points=points[k:k + 1], labels=np.array([1])) for k in range(args.objects))
    )
    meta_frames: Iterator[MetaFrame] = iter(())
    if args.compare == "meta":
        with torch.inference_mode():
            images = torch.cat([preprocess(frame, args.image_size, torch.device("cpu")) for frame in frames])
        if args.motion == "samurai":
            if keep is not None:
                parser.error("--keep-every-memory times ours only (use --compare none)")
            meta_frames = samurai_stream(ours, images, (height, width), points, args.image_size,
                                         samurai.memory_bank_iou_threshold)
        elif meta is None:
            meta_frames = edgetam_stream(weights, images, (height, width), points, args.image_size)
        else:
            meta_frames = meta_stream(meta, images, (height, width), schedule)

    ours_times: List[float] = []
    meta_times: List[float] = []
    ious: List[float] = []
    diffs: List[float] = []
    state_bytes_frame10: Optional[int] = None
    state_bytes = 0
    for frame_index, result, seconds, state_bytes in ours_stream(tracker, frames, schedule):
        ours_times.append(seconds)
        if frame_index == 10:
            state_bytes_frame10 = state_bytes
        line = {"frame": frame_index, "objects": len(result.object_ids), "ours_s": round(seconds, 4),
                "state_bytes": state_bytes}
        if args.compare == "meta":
            reference = next(meta_frames)
            assert reference.frame_index == frame_index and reference.object_ids == result.object_ids
            meta_times.append(reference.seconds)
            ious.append(mask_iou(result.masks.cpu(), reference.logits > 0).min().item())
            diffs.append((result.logits.cpu() - reference.logits).abs().max().item())
            line.update(meta_s=round(reference.seconds, 4), min_iou=ious[-1], max_logit_diff=diffs[-1])
        print(json.dumps(line), flush=True)

    ours_median = statistics.median(ours_times)
    meta_median = statistics.median(meta_times) if meta_times else None
    summary = {
        "summary": True,
        "frames": len(frames),
        "objects": args.objects,
        "motion": args.motion,
        "image_size": args.image_size,
        "ours_median_s": round(ours_median, 4),
        "meta_median_s": None if meta_median is None else round(meta_median, 4),
        "ratio": None if meta_median is None else round(ours_median / meta_median, 4),
        "min_iou": min(ious) if ious else None,
        "max_logit_diff": max(diffs) if diffs else None,
        "state_bytes_frame10": state_bytes_frame10,
        "state_bytes_end": state_bytes,
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_mib(), 1),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

"""Every model side by side: size, memory per object, and steady-state tracking frames/s of our tracker.

    python bench/models.py --models all --image-sizes 512 1024 --objects 1 4 --frames 3
    python bench/models.py --models sam2.1_hiera_tiny edgetam --image-sizes 1024 --objects 1 4

For each model and input size: our model with testkit/oracle.py's seeded random weights (objects made present,
so that masks and memories are real ones), fp32 (`--precision`), eager, on the CPU unless `--device` says otherwise. For each
object count K: a synthetic 480x640 clip (sam2_rt.io.synthetic), K clicks on frame 0, two tracked frames, then
the stream skips ahead with its memory filled (StreamState.skip_ahead: the memory a stream holds after
max_obj_ptrs_in_encoder - 1 tracked frames, the shapes of every later frame, without computing the frames in
between), then `--frames` frames are timed (`Tracker.step` from the raw frame, preprocessing included); the
median is reported. Speed does not depend on the weights' values, so random weights time what a checkpoint
would.

Prints one JSON line per (model, size, K):
    {"model", "image_size", "objects", "params_m", "weights_mb" (fp32 parameters), "state_bytes_per_object"
     (the stream's memory bank divided by its capacity K), "memory_tokens_per_frame", "step_s" (median),
     "fps", "device", "precision"}
then a Markdown table of the same (`--table` only the table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository root, for testkit
    sys.path.insert(0, str(REPO))

from sam2_rt import Tracker, TrackerConfig  # noqa: E402
from sam2_rt.io.synthetic import SyntheticClip  # noqa: E402
from sam2_rt.modeling.config import MODEL_NAMES  # noqa: E402
from testkit.oracle import present_objects_model  # noqa: E402

CLIP_SIZE = (480, 640)


def measure(model: torch.nn.Module, objects: int, frames: int, precision: str) -> Dict[str, float]:
    """Median seconds of a steady-state `Tracker.step` with `objects` clicked objects, and the bank's bytes."""
    tracker = Tracker(model, TrackerConfig(max_objects=objects, precision=precision))
    clip = SyntheticClip(height=CLIP_SIZE[0], width=CLIP_SIZE[1], num_shapes=max(objects, 3), seed=0)
    stream = tracker.create_stream()
    centers = clip.centers(0)
    for obj_id in range(1, objects + 1):
        x, y = centers[(obj_id - 1) % len(centers)]
        # Several objects on one shape get distinct clicks (K > shapes): shift each by a few pixels.
        shift = 6.0 * ((obj_id - 1) // len(centers))
        tracker.add_prompt(stream, obj_id, points=[(float(x) + shift, float(y))], labels=[1], frame_size=CLIP_SIZE)
    for index in range(3):  # the prompted frame, two tracked ones
        tracker.step(stream, clip.frame(index))
    config = tracker.model_config
    with torch.inference_mode():
        stream.skip_ahead(max(config.num_maskmem - 1, config.max_obj_ptrs_in_encoder - 1))
    times = []
    for index in range(frames):
        frame = clip.frame(stream.frame_index + index)
        start = time.perf_counter()
        tracker.step(stream, frame)
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times), "state_bytes_per_object": stream.memory.nbytes() / objects}


def rows(names: Sequence[str], sizes: Sequence[int], counts: Sequence[int], frames: int, device: torch.device,
         precision: str, seed: int) -> Iterator[Dict[str, object]]:
    """One result per (model, size, object count); see the module doc."""
    for name in names:
        for size in sizes:
            model = present_objects_model(size, name, seed=seed).to(device)
            params = sum(p.numel() for p in model.parameters())
            for count in counts:
                result = measure(model, count, frames, precision)
                yield {
                    "model": name,
                    "image_size": size,
                    "objects": count,
                    "params_m": round(params / 1e6, 2),
                    "weights_mb": round(params * 4 / 2**20, 1),
                    "state_bytes_per_object": int(result["state_bytes_per_object"]),
                    "memory_tokens_per_frame": model.config.memory_tokens,
                    "step_s": round(result["step_s"], 4),
                    "fps": round(1.0 / result["step_s"], 3),
                    "device": str(device),
                    "precision": precision,
                }
            del model


def table(results: List[Dict[str, object]]) -> str:
    """Markdown table of the results, one row per (model, size, objects)."""
    lines = ["| model | px | objects | params (M) | fp32 weights (MB) | memory / object (KiB) | step (s) | frames/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['image_size']} | {r['objects']} | {r['params_m']} | {r['weights_mb']} | "
                     f"{int(r['state_bytes_per_object']) / 1024:.0f} | {r['step_s']} | {r['fps']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["all"], help=f"'all' or names: {', '.join(MODEL_NAMES)}")
    parser.add_argument("--image-sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--objects", nargs="+", type=int, default=[1])
    parser.add_argument("--frames", type=int, default=3, help="timed steady-state frames per setting (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="print only the Markdown table at the end")
    args = parser.parse_args(list(argv) or None)
    names = list(MODEL_NAMES) if args.models == ["all"] else args.models
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODEL_NAMES)}")
    if args.frames < 1 or any(count < 1 for count in args.objects):
        parser.error("--frames and --objects must be >= 1")
    results = []
    for result in rows(names, args.image_sizes, args.objects, args.frames, torch.device(args.device),
                       args.precision, args.seed):
        results.append(result)
        if not args.table:
            print(json.dumps(result), flush=True)
    print(table(results), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

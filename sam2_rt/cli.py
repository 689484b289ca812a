"""`sam2-rt`: download checkpoints, track objects through a video, time the tracker. No ROS needed.

  sam2-rt download sam2.1_hiera_tiny [--dest DIR_OR_FILE]
  sam2-rt track VIDEO --model sam2.1_hiera_tiny [--checkpoint FILE | --random-weights]
                --click X,Y [--click X,Y ...] [--box X0,Y0,X1,Y1 ...] [--masks-dir DIR]
  sam2-rt bench --model sam2.1_hiera_tiny --image-size 512 --objects 3 --frames 20 --random-weights

Every click or box prompts a new object on the first frame (ids 1, 2, ... in the order given). `track` and
`bench` print one JSON line per frame and a last summary line; `track --masks-dir` also writes each frame's
label image (16-bit PNG, pixel = object id).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch

from sam2_rt.backends import BACKENDS, apply_backend
from sam2_rt.checkpoint import CheckpointError, download, load_model, random_model
from sam2_rt.config import MODEL_NAMES
from sam2_rt.modeling.sam2 import SAM2Model
from sam2_rt.tracker import PRECISIONS, Tracker, TrackerConfig, TrackerInputError, TrackResult

LOG = logging.getLogger("sam2_rt.cli")


def emit(line: str) -> None:
    """One line of the command's results on stdout (its output, not a log message)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _floats(text: str, count: int) -> List[float]:
    parts = text.split(",")
    if len(parts) != count:
        raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number in {text!r}") from None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(args: argparse.Namespace, device: torch.device) -> SAM2Model:
    """The named model with its checkpoint, or seeded random weights when asked for explicitly."""
    if args.random_weights:
        LOG.warning("running with RANDOM weights: the masks are meaningless (for timing and plumbing only)")
        return random_model(args.model, args.image_size, device)
    return load_model(args.model, args.checkpoint, args.image_size, device)


def make_tracker(args: argparse.Namespace) -> Tracker:
    device = _device(args.device)
    model = build_model(args, device)
    apply_backend(model, args.backend, precision=args.precision)
    return Tracker(model, TrackerConfig(max_objects=max(1, args.max_objects), precision=args.precision))


def video_frames(path: str, limit: Optional[int]) -> Iterator[np.ndarray]:
    """RGB uint8 frames of any video OpenCV reads."""
    import cv2

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"cannot open video {path!r}")
    count = 0
    try:
        while limit is None or count < limit:
            ok, bgr = capture.read()
            if not ok:
                return
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def synthetic_frames(height: int, width: int, count: int) -> Iterator[np.ndarray]:
    """A bright square moving over a textured background (for `bench`)."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    side = max(8, min(height, width) // 5)
    for index in range(count):
        frame = background.copy()
        x = (index * 5) % max(1, width - side)
        y = height // 3
        frame[y : y + side, x : x + side] = (230, 200, 40)
        yield frame


def frame_record(result: TrackResult, seconds: float) -> dict:
    areas = result.masks.flatten(1).sum(1).tolist() if result.masks.numel() else []
    return {
        "frame": result.frame_index,
        "seconds": round(seconds, 5),
        "objects": [
            {
                "id": obj_id,
                "state": result.states[row].name,
                "iou": round(float(result.ious[row]), 4),
                "presence": round(float(result.presence[row]), 4),
                "box": [round(float(v), 1) for v in result.boxes[row]],
                "area": int(areas[row]),
            }
            for row, obj_id in enumerate(result.object_ids)
        ],
    }


def run_frames(tracker: Tracker, frames: Iterator[np.ndarray], args: argparse.Namespace, masks_dir: Optional[Path]) -> int:
    state = tracker.create_stream()
    times: List[float] = []
    for index, frame in enumerate(frames):
        if index == 0:
            prompts = [{"points": [c], "labels": [1]} for c in args.click] + [{"box": b} for b in args.box]
            for obj_id, prompt in enumerate(prompts, start=1):
                tracker.add_prompt(state, obj_id, frame_size=frame.shape[:2], **prompt)
        start = time.perf_counter()
        result = tracker.step(state, frame)
        if result.masks.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        emit(json.dumps(frame_record(result, times[-1])))
        if masks_dir is not None:
            import cv2

            labels = result.label_image().cpu().numpy().astype(np.uint16)
            cv2.imwrite(str(masks_dir / f"{result.frame_index:06d}.png"), labels)
    if not times:
        raise SystemExit("no frames")
    summary = {
        "summary": True,
        "frames": len(times),
        "objects": len(args.click) + len(args.box),
        "image_size": tracker.image_size,
        "first_s": round(times[0], 5),
        "median_s": round(statistics.median(times[1:] or times), 5),
        "state_bytes": state.state_nbytes(),
    }
    emit(json.dumps(summary))
    return 0


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODEL_NAMES, default="sam2.1_hiera_tiny")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="Meta-format .pt (default: the downloaded official file)")
    weights.add_argument("--random-weights", action="store_true", help="seeded random weights (timing/plumbing only)")
    parser.add_argument("--image-size", type=int, default=1024, help="model input side (multiple of 32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--backend", choices=BACKENDS, default="eager")
    parser.add_argument("--max-objects", type=int, default=16)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam2-rt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    dl = sub.add_parser("download", help="download an official checkpoint (resumes; records its sha256)")
    dl.add_argument("name", choices=MODEL_NAMES)
    dl.add_argument("--dest", help="file or existing directory (default: $SAM2_RT_CACHE or ~/.cache/sam2_rt, where the node looks)")

    track = sub.add_parser("track", help="track objects prompted on the first frame of a video")
    track.add_argument("video", help="any file OpenCV reads")
    add_model_args(track)
    track.add_argument("--click", type=lambda t: _floats(t, 2), action="append", default=[], metavar="X,Y")
    track.add_argument("--box", type=lambda t: _floats(t, 4), action="append", default=[], metavar="X0,Y0,X1,Y1")
    track.add_argument("--frames", type=int, default=None, help="stop after N frames")
    track.add_argument("--masks-dir", type=Path, help="write label PNGs (uint16, pixel = object id) here")

    bench = sub.add_parser("bench", help="per-frame tracker time on synthetic frames")
    add_model_args(bench)
    bench.add_argument("--objects", type=int, default=1)
    bench.add_argument("--frames", type=int, default=20)
    bench.add_argument("--height", type=int, default=480)
    bench.add_argument("--width", type=int, default=640)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "download":
            path = download(args.name, args.dest)
            LOG.info("checkpoint ready: %s", path)
            return 0
        if args.command == "track":
            if not args.click and not args.box:
                raise SystemExit("give at least one --click or --box")
            if args.masks_dir is not None:
                args.masks_dir.mkdir(parents=True, exist_ok=True)
            return run_frames(make_tracker(args), video_frames(args.video, args.frames), args, args.masks_dir)
        # bench: K clicks spread along the moving square's row
        args.click = [[(k + 1) * args.width / (args.objects + 1), args.height / 3 + 10] for k in range(args.objects)]
        args.box = []
        args.max_objects = max(args.max_objects, args.objects)
        frames = synthetic_frames(args.height, args.width, args.frames)
        return run_frames(make_tracker(args), frames, args, None)
    except (CheckpointError, TrackerInputError) as err:
        LOG.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())

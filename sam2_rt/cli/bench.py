"""`sam2-rt bench`: per-frame tracker time on synthetic frames, as JSON Lines and a summary line."""
from __future__ import annotations

import argparse
import json
from typing import Iterator

import numpy as np

from sam2_rt.cli.emit import emit
from sam2_rt.cli.loop import make_tracker, summary_record, track_frames
from sam2_rt.io.prompts import PromptEvent, PromptSchedule
from sam2_rt.io.track_outputs import JsonLines
from sam2_rt.io.video import DEFAULT_FRAME_ID, VideoFrame


def synthetic_frames(height: int, width: int, count: int) -> Iterator[VideoFrame]:
    """A bright square moving over a textured background, at 30 fps (for `bench`)."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    side = max(8, min(height, width) // 5)
    for index in range(count):
        rgb = background.copy()
        x = (index * 5) % max(1, width - side)
        y = height // 3
        rgb[y : y + side, x : x + side] = (230, 200, 40)
        time_s = index / 30.0
        yield VideoFrame(index, rgb, time_s, int(round(time_s * 1e9)), DEFAULT_FRAME_ID)


def run_bench(args: argparse.Namespace) -> int:
    schedule = PromptSchedule()
    for k in range(args.objects):  # clicks spread along the moving square's row
        point = np.array([[(k + 1) * args.width / (args.objects + 1), args.height / 3 + 10]])
        schedule.at_frame(0, PromptEvent(object_ids=(k + 1,), points=point, labels=np.array([1]), origin="bench"))
    args.max_objects = max(args.max_objects, args.objects)
    tracker, weights = make_tracker(args)
    stats = track_frames(tracker, synthetic_frames(args.height, args.width, args.frames), [schedule],
                         [JsonLines("-")])
    emit(json.dumps(summary_record(stats, tracker, weights=weights)))
    return 0

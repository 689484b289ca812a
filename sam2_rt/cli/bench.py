"""`sam2-rt bench`: per-frame tracker time on a synthetic clip (`sam2_rt.io.synthetic`), one object clicked
on each of its shapes, as JSON Lines and a summary line."""
from __future__ import annotations

import argparse
import json
from typing import Iterator

import numpy as np

from sam2_rt.cli.emit import emit
from sam2_rt.cli.loop import make_tracker, summary_record, track_frames
from sam2_rt.io.prompts import PromptEvent, PromptSchedule
from sam2_rt.io.synthetic import SyntheticClip
from sam2_rt.io.track_outputs import JsonLines
from sam2_rt.io.video import DEFAULT_FRAME_ID, VideoFrame


def clip_frames(clip: SyntheticClip, count: int) -> Iterator[VideoFrame]:
    """The first `count` frames of a synthetic clip as frames of a 30 fps video."""
    for index in range(count):
        time_s = index / 30.0
        yield VideoFrame(index, clip.frame(index), time_s, int(round(time_s * 1e9)), DEFAULT_FRAME_ID)


def run_bench(args: argparse.Namespace) -> int:
    clip = SyntheticClip(args.height, args.width, num_shapes=args.objects)
    schedule = PromptSchedule()
    for k, centre in enumerate(clip.centers(0)):  # a click on each shape
        point = centre[None]
        schedule.at_frame(0, PromptEvent(object_ids=(k + 1,), points=point, labels=np.array([1]), origin="bench"))
    args.max_objects = max(args.max_objects, args.objects)
    tracker, weights = make_tracker(args)
    stats = track_frames(tracker, clip_frames(clip, args.frames), [schedule], [JsonLines("-")])
    emit(json.dumps(summary_record(stats, tracker, weights=weights)))
    return 0

"""A tracker's warm-up: every program of a fixed-shape backend built (or loaded) before the first frame, each
run on scratch streams the way real frames run it (`Tracker.warmup` documents what is built)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from sam2_rt.runtime.backends import ShapePlan
from sam2_rt.tracking.config import WarmupReport
from sam2_rt.tracking.step import spread

if TYPE_CHECKING:
    from sam2_rt.tracking.tracker import Tracker

logger = logging.getLogger("sam2_rt.tracking.tracker")  # the tracker's log, where its users look for it


def run_warmup(tracker: "Tracker", object_counts: Optional[Sequence[int]], max_streams: int) -> WarmupReport:
    """`Tracker.warmup`."""
    if max_streams < 1:
        raise ValueError(f"max_streams must be >= 1, got {max_streams}")
    start = time.perf_counter()
    first_event = len(tracker.runner.events)
    plan = tracker.runner.serve_streams(max_streams)
    if tracker.runner.fixed_shapes:
        if object_counts is not None:
            largest = tracker.runner.batch_for(max_streams * max(object_counts))
            plan = ShapePlan(
                frames=plan.frames,
                rows=tuple(sorted({tracker.runner.batch_for(count) for count in object_counts})),
                per_row=tuple(rows for rows in plan.per_row if rows <= largest),
                steady=plan.steady,
            )
        logger.info("warm-up of backend %s (%s) for %s object(s)%s", tracker.backend.used, tracker.precision,
                    ", ".join(map(str, plan.rows)),
                    f", {max_streams} streams: {', '.join(map(str, plan.per_row))} rows" if plan.per_row else "")
        with tracker.runner.compiling():
            tracker.runner.prepare(plan)
            scratch = [[rows] for rows in plan.rows] + [spread(rows, max_streams) for rows in plan.per_row]
            for index, counts in enumerate(scratch):
                logger.info("warm-up: %s object(s) (%d/%d)", "+".join(map(str, counts)), index + 1,
                            len(scratch))
                for conditioning in plan.steady or (0,):
                    scratch_frames(tracker, counts, conditioning)
            tracker.runner.finish_warmup()
    report = WarmupReport(
        backend=tracker.backend.used,
        precision=tracker.precision,
        buckets=plan.rows,
        events=tuple(tracker.runner.events[first_event:]),
        seconds=time.perf_counter() - start,
        frame_buckets=plan.frames if max_streams > 1 else (),
        stream_buckets=plan.per_row,
    )
    logger.info("warm-up done in %.1f s: %s", report.seconds, report.summary())
    return report


def scratch_frames(tracker: "Tracker", object_counts: Sequence[int], conditioning: int = 0) -> None:
    """Step throw-away streams (one per count, with that many clicked objects), all streams together.

    conditioning 0: a prompted and two tracked frames (every program but the steady-state ones).
    c >= 1: c prompted frames (the objects' first clicks, then c - 1 refinements) and two tracked frames
    (the masked programs), then the streams skip ahead with their memory filled by copies
    (MemoryBank.fill_history: what a stream reaches after max_obj_ptrs_in_encoder - 1 tracked frames,
    without computing them) and track two more frames (the steady-state program of c conditioning frames).
    """
    size = tracker.image_size
    frame = np.full((size, size, 3), 128, dtype=np.uint8)
    streams = [tracker.create_stream() for _ in object_counts]
    for prompted in range(max(conditioning, 1)):
        for stream, num_objects in zip(streams, object_counts):
            for obj_id in range(1, num_objects + 1):
                point = [[size * obj_id / (num_objects + 1), size / 2 + prompted]]
                tracker.add_prompt(stream, obj_id, points=point, labels=[1], frame_size=(size, size))
        tracker.step_many(streams, [frame] * len(streams))
    for _ in range(2):
        tracker.step_many(streams, [frame] * len(streams))
    if not conditioning:
        return
    gap = max(tracker.model_config.num_maskmem - 1, tracker.model_config.max_obj_ptrs_in_encoder - 1)
    with torch.inference_mode():
        for stream in streams:
            stream.skip_ahead(gap)
    for _ in range(2):
        tracker.step_many(streams, [frame] * len(streams))

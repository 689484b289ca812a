"""`sam2-rt track`: prompted (or detector-driven) tracking of a video, image folder, camera, stream or
rosbag2 recording, written as an overlay video, label images, JSON Lines and/or a rosbag2 recording."""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import sys
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from sam2_rt.cli.emit import emit
from sam2_rt.cli.errors import CliError, UsageError
from sam2_rt.cli.loop import make_tracker, summary_record, track_frames
from sam2_rt.detection.decisions import AssociationConfig, Detection
from sam2_rt.detection.driver import DetectionDriver, load_detections_file
from sam2_rt.io.frame_outputs import MAX_OUTPUT_OBJECT_ID
from sam2_rt.io.overlay import MAX_OVERLAY_OBJECTS
from sam2_rt.io.prompts import PromptSchedule, command_line_schedule, load_prompt_file
from sam2_rt.io.track_outputs import JsonLines, MaskPngs, OverlayVideo, RosbagRecording
from sam2_rt.io.video import FrameSource, VideoFrame, open_source
from sam2_rt.weights.loading import RANDOM_WEIGHTS_BANNER

logger = logging.getLogger(__name__)

# Frame rate of the overlay video when the input does not say (cameras that report none).
FALLBACK_FPS = 30.0


def _open_outputs(args: argparse.Namespace, source: FrameSource, stack: contextlib.ExitStack) -> List[Any]:
    """The outputs asked for, each closed by `stack`; fails before the model loads if one is unwritable."""
    outputs: List[Any] = []

    def add(output: Any) -> None:
        stack.callback(output.close)
        outputs.append(output)

    if args.output is not None:
        if args.max_objects > MAX_OVERLAY_OBJECTS:
            raise CliError(f"--output draws at most {MAX_OVERLAY_OBJECTS} objects, and --max-objects is "
                           f"{args.max_objects}: lower --max-objects, or write --masks / --json instead")
        banner = f"{RANDOM_WEIGHTS_BANNER} (sam2-rt download)" if args.random_weights else None
        add(OverlayVideo(args.output, source.fps or FALLBACK_FPS, source.size, args.alpha, banner))
    if args.masks is not None:
        add(MaskPngs(args.masks))
    if args.json is not None:
        add(JsonLines(args.json))
    if args.bag is not None:
        add(RosbagRecording(args.bag, args.bag_storage))
    return outputs


def _detector(args: argparse.Namespace) -> Optional[Tuple[DetectionDriver, Mapping[int, Sequence[Detection]]]]:
    """The detection policy and the detections of --detections, or None without it."""
    if args.detections is None:
        return None
    config = AssociationConfig(
        score_threshold=args.detection_min_score, refresh_every_n_frames=args.refresh_every,
        remove_lost_after_frames=args.remove_lost_after, max_objects=args.max_objects,
        max_object_id=MAX_OUTPUT_OBJECT_ID,
    )
    return DetectionDriver(config), load_detections_file(args.detections)


def run_track(args: argparse.Namespace) -> int:
    schedules: List[PromptSchedule] = [command_line_schedule(args.point, args.box)]
    if args.prompts is not None:
        schedules.append(load_prompt_file(args.prompts))
    detector = _detector(args)
    if not any(len(schedule) for schedule in schedules) and detector is None:
        raise UsageError("sam2-rt track", "no prompts: give --point, --box, --prompts or --detections")
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(args.input, topic=args.topic, fps=args.fps))
        logger.info("%s", source.describe())
        outputs = _open_outputs(args, source, stack)
        tracker, weights = make_tracker(args)
        for schedule in schedules:
            schedule.validate(tracker, source.size)
        frames: Iterable[VideoFrame] = source
        total = None if source.live else source.num_frames
        if args.max_frames is not None:
            frames = itertools.islice(source, args.max_frames)
            total = args.max_frames if total is None else min(total, args.max_frames)
        progress = _progress_bar(total, source.live, args.quiet)
        stack.callback(progress.close)
        stats = track_frames(tracker, frames, schedules, outputs, progress, detector)
    left = sum(len(schedule) for schedule in schedules)
    if left:
        logger.warning("%d prompt(s) were never applied: their frame or time comes after the last frame tracked", left)
    summary = summary_record(stats, tracker, input=source.name, weights=weights, interrupted=stats.interrupted,
                       outputs=[output.summary for output in outputs])
    if detector is not None:
        summary["detection_decisions"] = dict(sorted(stats.decisions.items()))
    emit(json.dumps(summary))
    if stats.interrupted and not source.live:
        return 130
    if source.ended_early:  # a file cut short: its frames were all tracked, but not all of the file (warned)
        return 1
    return 0


def _progress_bar(total: Optional[int], live: bool, quiet: bool) -> Any:
    """A tqdm bar on stderr: frames, frames/s and ETA for files and bags; a live rate line for cameras."""
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", disable=quiet, dynamic_ncols=True, file=sys.stderr,
                desc="live" if live else "tracking", smoothing=0.1 if live else 0.3)

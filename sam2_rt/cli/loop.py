"""The tracking loop of `sam2-rt track` and `sam2-rt bench`: the tracker from the model options, frames in,
prompts applied, results to the outputs, a summary of the run."""
from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from sam2_rt.cli.errors import CliError
from sam2_rt.detection.decisions import Detection
from sam2_rt.detection.driver import DetectionDriver
from sam2_rt.io.frame_outputs import FrameOutputs
from sam2_rt.io.prompts import PromptEvent, PromptProvider, apply_events
from sam2_rt.io.video import VideoFrame
from sam2_rt.tracking.config import TrackerConfig
from sam2_rt.tracking.tracker import Tracker
from sam2_rt.weights.loading import MissingCheckpointError, build_model, resolve_device

logger = logging.getLogger(__name__)


def make_tracker(args: argparse.Namespace) -> Tuple[Tracker, str]:
    """(Tracker, description of its weights) for the model options of `track` and `bench`."""
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise CliError(str(error)) from None
    try:
        model, weights = build_model(args.model, args.checkpoint, args.image_size, device, args.random_weights)
    except MissingCheckpointError as error:
        raise CliError(f"{error}; or pass --checkpoint FILE, or --random-weights to try the pipeline with "
                       "meaningless masks") from None
    config = TrackerConfig(max_objects=args.max_objects, precision=args.precision, backend=args.backend,
                           motion=args.motion)
    tracker = Tracker(model, config)
    # Compiled backends build (or load) every shape now, never in the middle of a video.
    report = tracker.warmup()
    if report.events:
        logger.info("warm-up: %s in %.1f s", report.summary(), report.seconds)
    return tracker, weights


# --------------------------------------------------------------------------- the tracking loop


@dataclass
class RunStats:
    """What a run of `track_frames` did."""

    frames: int = 0
    step_seconds: List[float] = field(default_factory=list)  # tracker time per frame (host copy included)
    object_ids: List[int] = field(default_factory=list)  # every id tracked at some point, ascending
    state_bytes: int = 0  # memory the stream held after the last frame
    decisions: Dict[str, int] = field(default_factory=dict)  # detection-policy decisions by kind (--detections)
    wall_seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C


def track_frames(
    tracker: Tracker,
    frames: Iterable[VideoFrame],
    providers: Sequence[PromptProvider],
    outputs: Sequence[Any],
    progress: Any = None,
    detector: Optional[Tuple[DetectionDriver, Mapping[int, Sequence[Detection]]]] = None,
) -> RunStats:
    """Track a stream of frames: before each frame, every provider's prompts for it are applied (in the
    order of `providers`); after it, every output gets the frame and its result.

    Arguments:
      tracker: the tracker (a new stream is created).
      frames: the frames, in order.
      providers: prompt providers (`sam2_rt.io.prompts.PromptProvider`), asked once per frame. One that needs
        the results (e.g. to associate detector boxes with tracked objects) can be in `outputs` too.
      outputs: objects with write(frame, FrameOutputs, seconds).
      progress: a tqdm bar updated once per frame, or None.
      detector: detector-driven tracking (`--detections`): the policy's driver and the detections by frame
        index; it runs before every frame (after the prompts) and the outputs carry each object's class.
    Ctrl-C ends the run (RunStats.interrupted): the frames finished before it are all written, the one in
    progress is dropped.
    """
    state = tracker.create_stream()
    stats = RunStats()
    seen = set()
    start_wall = time.perf_counter()
    try:
        for frame in frames:
            events: List[PromptEvent] = [event for provider in providers for event in provider.events_for(frame)]
            apply_events(tracker, state, events, frame.rgb.shape[:2])
            if detector is not None:
                driver, detections = detector
                for decision in driver.before_step(tracker, state, detections.get(frame.index, ()),
                                                   frame.rgb.shape[:2]):
                    logger.debug("frame %d: %s", frame.index, decision)
                    stats.decisions[decision.kind.value] = stats.decisions.get(decision.kind.value, 0) + 1
            start = time.perf_counter()
            result = tracker.step(state, frame.rgb)
            host = FrameOutputs.from_result(result)  # the copy to the host waits for the device
            seconds = time.perf_counter() - start
            if detector is not None:
                driver.after_step(result)
                host = host.with_classes(driver.labels())
            for output in outputs:
                output.write(frame, host, seconds)
            stats.frames += 1
            stats.step_seconds.append(seconds)
            seen.update(int(obj_id) for obj_id in host.object_ids)
            if progress is not None:
                progress.set_postfix(objects=len(host.object_ids), refresh=False)
                progress.update(1)
    except KeyboardInterrupt:
        stats.interrupted = True
    stats.object_ids = sorted(seen)
    stats.state_bytes = state.state_nbytes()
    stats.wall_seconds = time.perf_counter() - start_wall
    return stats


def summary_record(stats: RunStats, tracker: Tracker, **extra: Any) -> dict:
    """The summary line of a run (JSON): frames, objects, first and median step time, rate, state size."""
    times = stats.step_seconds
    return {
        "summary": True,
        **extra,
        "frames": stats.frames,
        "objects": stats.object_ids,
        "image_size": tracker.image_size,
        "first_s": round(times[0], 5) if times else None,
        "median_s": round(statistics.median(times[1:] or times), 5) if times else None,
        "rate_hz": round(stats.frames / stats.wall_seconds, 3) if stats.wall_seconds > 0 else None,
        "state_bytes": stats.state_bytes,
    }


"""`sam2-rt`: track objects through videos, cameras and rosbag2 recordings; download checkpoints; time the
tracker. No ROS install needed.

  sam2-rt download [NAME ...] [--list] [--dest DIR]
  sam2-rt track INPUT [--topic TOPIC] --point X,Y[,LABEL][@OBJ] ... --box X0,Y0,X1,Y1[@OBJ] ...
                [--prompts FILE] [--output overlay.mp4] [--masks DIR] [--json FILE|-] [--bag OUT]
  sam2-rt bench --image-size 512 --objects 3 --frames 20 --random-weights

Examples:
  sam2-rt download                                        # sam2.1_hiera_tiny into ~/.cache/sam2_rt
  sam2-rt track clip.mp4 --point 320,200@1 --point 500,260@2 --output overlay.mp4
  sam2-rt track recording/ --topic /camera/image_raw --box 100,80,220,200 --output o.mp4 --bag tracked/
  sam2-rt track 0 --point 320,240 --output live.mp4       # camera 0, until Ctrl-C

`sam2-rt COMMAND --help` explains each command. Errors are one line on stderr and a non-zero exit status
(2: wrong command line, 1: anything else); --debug adds the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, NoReturn, Optional, Sequence, Tuple

import numpy as np
from sam2_rt.weights.checkpoint import CHECKPOINTS, CheckpointError, default_cache_dir, download
from sam2_rt.detection.association import AssociationConfig, Detection
from sam2_rt.modeling.config import BACKEND_NAMES, DEVICE_NAMES, IMAGE_SIZE_MULTIPLE, MODEL_NAMES, PRECISION_NAMES
from sam2_rt.detection.driver import DetectionDriver, DetectionFileError, load_detections_file
from sam2_rt.io.frame_outputs import MAX_OUTPUT_OBJECT_ID, FrameOutputs
from sam2_rt.io.overlay import MAX_OVERLAY_OBJECTS
from sam2_rt.io.prompts import (
    USER_GUIDE,
    PromptError,
    PromptEvent,
    PromptProvider,
    PromptSchedule,
    apply_events,
    command_line_schedule,
    load_prompt_file,
    parse_box,
    parse_point,
)
from sam2_rt.weights.loading import RANDOM_WEIGHTS_BANNER, MissingCheckpointError, build_model, resolve_device
from sam2_rt.cli.emit import emit
from sam2_rt.io.track_outputs import JsonLines, MaskPngs, OutputError, OverlayVideo, RosbagRecording
from sam2_rt.tracking.config import TrackerConfig
from sam2_rt.tracking.state import TrackerInputError
from sam2_rt.tracking.tracker import Tracker
from sam2_rt.io.video import DEFAULT_FRAME_ID, FrameSource, VideoFrame, VideoSourceError, open_source

logger = logging.getLogger("sam2_rt.cli.commands")
DEFAULT_MODEL = "sam2.1_hiera_tiny"
# Frame rate of the overlay video when the input does not say (cameras that report none).
FALLBACK_FPS = 30.0


class CliError(RuntimeError):
    """A problem with what was asked (reported as one line, exit status 1)."""


class UsageError(Exception):
    """A wrong command line (reported as one line, exit status 2)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message} (see {prog} --help)")


# The errors reported as one line without a traceback: everything a user can cause and fix.
USER_ERRORS = (CliError, CheckpointError, VideoSourceError, PromptError, OutputError, TrackerInputError,
               DetectionFileError)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: raises UsageError instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


# --------------------------------------------------------------------------- argument types


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser that raises PromptError / ValueError (the message becomes argparse's)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (PromptError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def _image_size(text: str) -> int:
    value = int(text)
    if value <= 0 or value % IMAGE_SIZE_MULTIPLE:
        raise ValueError(f"the image size must be a positive multiple of {IMAGE_SIZE_MULTIPLE}, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a whole number >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected an integer >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a number > 0, got {text}")
    return value


def _score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise ValueError(f"expected a score in 0..1, got {text}")
    return value


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"expected an opacity in 0..1, got {text}")
    return value


def _checked_point(text: str) -> str:
    parse_point(text)
    return text


def _checked_box(text: str) -> str:
    parse_box(text)
    return text


# --------------------------------------------------------------------------- model


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
    config = TrackerConfig(max_objects=args.max_objects, precision=args.precision, backend=args.backend)
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


def _summary(stats: RunStats, tracker: Tracker, **extra: Any) -> dict:
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


# --------------------------------------------------------------------------- track


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
    summary = _summary(stats, tracker, input=source.name, weights=weights, interrupted=stats.interrupted,
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


# --------------------------------------------------------------------------- bench


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
    emit(json.dumps(_summary(stats, tracker, weights=weights)))
    return 0


# --------------------------------------------------------------------------- download


def _url_of(names: Sequence[str], mirror: Optional[str]) -> dict:
    """Model name -> download address: Meta's, or <mirror>/<official file name>."""
    if mirror is None:
        return {name: CHECKPOINTS[name].url for name in names}
    return {name: f"{mirror.rstrip('/')}/{CHECKPOINTS[name].filename}" for name in names}


def run_download(args: argparse.Namespace) -> int:
    unknown = [name for name in args.names if name not in MODEL_NAMES]
    if unknown:
        raise UsageError("sam2-rt download", f"unknown model {unknown[0]!r}; choose from {', '.join(MODEL_NAMES)}")
    folder = Path(args.dest).expanduser() if args.dest else default_cache_dir()
    if args.list:
        from sam2_rt.weights.listing import list_checkpoints

        names = args.names or list(MODEL_NAMES)
        rows = list_checkpoints(folder, names, _url_of(names, args.mirror), timeout=args.timeout)
        emit(f"{'model':<22} {'size':>10}  {'status':<30} file")
        for row in rows:
            size = "?" if row.remote_bytes is None else f"{row.remote_bytes / 2**20:.1f} MiB"
            status = f"present, sha256 {row.sha256_state}" if row.present else "not downloaded"
            emit(f"{row.name:<22} {size:>10}  {status:<30} {row.path}")
        if any(row.remote_bytes is None for row in rows):
            logger.warning("sizes marked ? could not be asked from the server (offline, or it does not say)")
        return 0
    names = args.names or [DEFAULT_MODEL]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create the folder {folder}: {error.strerror or error}") from None
    urls = _url_of(names, args.mirror)
    for name in names:
        path = download(name, folder, url=urls[name], progress=_download_bar(name, args.quiet), timeout=args.timeout)
        emit(f"{name}: {path}")
    if args.dest and folder.resolve() != default_cache_dir().resolve():
        logger.info("files outside %s are not found by default: pass --checkpoint FILE to `track`, or the "
                    "node's checkpoint parameter", default_cache_dir())
    return 0


def _download_bar(name: str, quiet: bool) -> Callable[[int, Optional[int]], None]:
    """A progress callback of `sam2_rt.weights.checkpoint.download` drawing a tqdm bar in bytes."""
    from tqdm import tqdm

    bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=quiet, file=sys.stderr,
               dynamic_ncols=True)

    def update(done: int, total: Optional[int]) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return update


# --------------------------------------------------------------------------- parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings and errors only")
    parser.add_argument("--debug", action="store_true", help="debug log lines, and the traceback of an error")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", choices=MODEL_NAMES, default=DEFAULT_MODEL, metavar="NAME",
                       help=f"{', '.join(MODEL_NAMES)} (default {DEFAULT_MODEL})")
    weights = group.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="Meta's .pt file of --model (default: the file `sam2-rt download` "
                                              "stored in $SAM2_RT_CACHE or ~/.cache/sam2_rt)")
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random weights, no checkpoint: the masks are meaningless (pipeline, timing)")
    group.add_argument("--image-size", type=_argument_type(_image_size), default=1024,
                       help=f"model input side, a multiple of {IMAGE_SIZE_MULTIPLE} (default 1024, as the "
                            "models were trained; smaller is faster and coarser)")
    group.add_argument("--device", default="auto",
                       help=f"{', '.join(DEVICE_NAMES)} or cuda:N (default auto: cuda when available)")
    group.add_argument("--precision", choices=PRECISION_NAMES, default="auto",
                       help="default auto: bf16 on a CUDA GPU that has it, fp32 elsewhere")
    group.add_argument("--backend", choices=BACKEND_NAMES, default="eager",
                       help="default eager; an unavailable backend falls back with a warning")
    group.add_argument("--max-objects", type=_argument_type(_positive_int), default=16,
                       help="most objects tracked at once (memory is preallocated; default 16)")


TRACK_EPILOG = f"""\
inputs:
  a video file (anything OpenCV reads), a folder of images (sorted by name, --fps), a camera index (0, 1,
  ...; runs until Ctrl-C), a stream URL (rtsp://, http://), or a rosbag2 recording (its folder, or a .mcap /
  .db3 file) with --topic: sensor_msgs/Image or CompressedImage (optional when it has one image topic).

prompts:
{USER_GUIDE}
outputs:
  --output FILE.mp4  the frames with masks tinted and outlined, boxes, ids and a legend (.avi: Motion-JPEG)
  --masks DIR        DIR/NNNNNN.png per frame: 16-bit label images, pixel = object id, 0 = background
  --json FILE        JSON Lines, one record per frame ("-": stdout):
                     {{"frame": N, "time": s, "stamp_ns": ..., "frame_id": ..., "seconds": tracker time,
                      "objects": [{{"id", "state", "label", "iou", "presence", "box": [x0, y0, x1, y1],
                      "area"}}]}}
  --bag OUT          a rosbag2 recording (ros2 bag play OUT): the input images (a bag's own messages, else
                     /image rgb8), /masks (mono16 label image) and /objects (sam2_ros/msg/TrackedObjectArray),
                     with the input's header (stamp, frame_id)
  A summary line (JSON) goes to stdout at the end; a progress bar (frames/s, ETA) or, for cameras and
  streams, a live rate line to stderr.

detector-driven tracking (--detections FILE.json):
  {{"frames": {{"<frame number>": [{{"box": [x0, y0, x1, y1], "score": 0.9, "label": "person", "track_id": "7"}},
   ...]}}}}   frame numbers from 0, boxes in pixels; score (default 1), label and track_id optional.
  A box over no tracked object starts one (new id); a box of a LOST object's class near its last box
  re-acquires it under its old id; boxes over tracked objects do nothing (or refresh them, --refresh-every);
  a detector track id always maps to the same object id. Each JSON record lists the object's label.
  README "Detector-driven tracking" has the rules and every parameter.

examples:
  sam2-rt track clip.mp4 --point 320,200@1 --point 340,120,0@1 --box 420,150,560,330@2 --output o.mp4
  sam2-rt track rec/ --topic /camera/image_raw/compressed --prompts prompts.yaml --output o.mp4 --bag out/
  sam2-rt track frames/ --fps 15 --point 100,80 --masks masks/ --json tracks.jsonl
  sam2-rt track clip.mp4 --detections yolo.json --output o.mp4 --json tracks.jsonl
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sam2-rt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{track,download,bench}")

    track = sub.add_parser("track", help="track prompted objects through a video, camera or rosbag2 recording",
                           description="Track prompted objects through a video, image folder, camera, stream "
                                       "or rosbag2 recording; write an overlay video, label images, JSON Lines "
                                       "and/or a rosbag2 recording.",
                           epilog=TRACK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    track.add_argument("input", help="video file, image folder, camera index, stream URL or rosbag2 recording")
    track.add_argument("--topic", help="image topic of a rosbag2 recording")
    track.add_argument("--fps", type=_argument_type(_positive_float), default=None,
                       help="frame rate of an image folder (default 30; sets its timestamps)")
    track.add_argument("--max-frames", type=_argument_type(_positive_int), default=None,
                       help="stop after N frames")
    prompts = track.add_argument_group("prompts (see below)")
    prompts.add_argument("--point", type=_argument_type(_checked_point), action="append", default=[],
                         metavar="X,Y[,LABEL][@OBJ]", help="a click on the first frame (repeatable)")
    prompts.add_argument("--box", type=_argument_type(_checked_box), action="append", default=[],
                         metavar="X0,Y0,X1,Y1[@OBJ]", help="a box on the first frame (repeatable)")
    prompts.add_argument("--prompts", type=Path, metavar="FILE", help="prompt file (.json, .yaml): prompts at "
                         "frame numbers or times; objects added, refined, removed")
    detections = track.add_argument_group("detector-driven tracking (see below)")
    detections.add_argument("--detections", type=Path, metavar="FILE.json",
                            help="detector boxes by frame: they start, refresh and re-acquire objects")
    detections.add_argument("--detection-min-score", type=_argument_type(_score), default=0.5, metavar="S",
                            help="ignore boxes scored below S (default 0.5)")
    detections.add_argument("--refresh-every", type=_argument_type(_non_negative_int), default=0, metavar="N",
                            help="re-prompt a tracked object with its matching box every N frames (default 0: never)")
    detections.add_argument("--remove-lost-after", type=_argument_type(_non_negative_int), default=0, metavar="N",
                            help="remove detector-started objects LOST for N frames (default 0: never)")
    outputs = track.add_argument_group("outputs (see below)")
    outputs.add_argument("--output", type=Path, metavar="FILE.mp4", help="overlay video")
    outputs.add_argument("--masks", type=Path, metavar="DIR", help="16-bit label PNGs")
    outputs.add_argument("--json", metavar="FILE", help="JSON Lines, one record per frame (- = stdout)")
    outputs.add_argument("--bag", type=Path, metavar="OUT", help="rosbag2 recording (must not exist)")
    outputs.add_argument("--bag-storage", choices=("sqlite3", "mcap"), default="sqlite3",
                         help="storage of --bag (default sqlite3: every ROS 2 release reads it)")
    outputs.add_argument("--alpha", type=_argument_type(_alpha), default=0.5,
                         help="mask tint opacity of --output, 0..1 (default 0.5)")
    _add_model_args(track)
    _add_common(track)

    dl = sub.add_parser("download", help="download official checkpoints (resumes; records and checks sha256)",
                        description="Download Meta's official SAM 2 / 2.1 checkpoints into the cache where "
                                    "`sam2-rt track` and the node find them, resuming interrupted downloads; "
                                    "the sha256 of the first download is recorded and later ones must match.")
    dl.add_argument("names", nargs="*", metavar="NAME",
                    help=f"model names (default {DEFAULT_MODEL}): {', '.join(MODEL_NAMES)}")
    dl.add_argument("--list", action="store_true", help="list models: size on the server, local file, sha256 state")
    dl.add_argument("--dest", metavar="DIR", help="folder of the files (default $SAM2_RT_CACHE or ~/.cache/sam2_rt)")
    dl.add_argument("--mirror", metavar="URL", help="a server with the official file names (default: Meta's)")
    dl.add_argument("--timeout", type=_argument_type(_positive_float), default=30.0,
                    help="seconds a connection may stay silent (default 30)")
    _add_common(dl)

    bench = sub.add_parser("bench", help="per-frame tracker time on synthetic frames (JSON lines)")
    _add_model_args(bench)
    bench.add_argument("--objects", type=_argument_type(_positive_int), default=1)
    bench.add_argument("--frames", type=_argument_type(_positive_int), default=20)
    bench.add_argument("--height", type=_argument_type(_positive_int), default=480)
    bench.add_argument("--width", type=_argument_type(_positive_int), default=640)
    _add_common(bench)
    return parser


COMMANDS = {"track": run_track, "download": run_download, "bench": run_bench}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `sam2-rt`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    if not args.debug:  # FFmpeg's own log lines would repeat our one-line error about an unreadable input
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        with _console_logging(args):
            return COMMANDS[args.command](args)
    except UsageError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    except USER_ERRORS as error:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"sam2-rt {args.command}: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"sam2-rt {args.command}: interrupted\n")
        return 130
    except Exception as error:  # a bug, not a user error: say so in one line unless asked for the traceback
        if args.debug:
            raise
        sys.stderr.write(f"sam2-rt {args.command}: internal error: {type(error).__name__}: {error} "
                         "(--debug shows the traceback)\n")
        return 1


@contextlib.contextmanager
def _console_logging(args: argparse.Namespace) -> Iterator[None]:
    """Log lines on stderr while a command runs (warnings only with --quiet, debug lines with --debug),
    routed through tqdm so that they do not break a progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(levelname)s %(name)s: %(message)s" if args.debug else "%(levelname)s: %(message)s"))
    previous_level = root.level
    root.setLevel(logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO)
    root.addHandler(handler)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


if __name__ == "__main__":
    sys.exit(main())

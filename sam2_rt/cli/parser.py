"""The command line of `sam2-rt`: its parser, the argument types that check each value, the help texts."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from sam2_rt.cli.errors import UsageError
from sam2_rt.io.prompts import USER_GUIDE, PromptError, parse_box, parse_point
from sam2_rt.modeling.config import (
    BACKEND_NAMES,
    DEVICE_NAMES,
    EDGETAM_NAME,
    IMAGE_SIZE_MULTIPLE,
    MODEL_NAMES,
    PRECISION_NAMES,
    model_size_problem,
)
from sam2_rt.tracking.motion import MOTION_NAMES

# The top-level help of `sam2-rt`.
USAGE = """`sam2-rt`: track objects through videos, cameras and rosbag2 recordings; download checkpoints; time the
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

DEFAULT_MODEL = "sam2.1_hiera_tiny"


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
                       help=f"model input side, a multiple of {IMAGE_SIZE_MULTIPLE} ({EDGETAM_NAME}: of 256; default "
                            "1024, as the models were trained; smaller is faster and coarser)")
    group.add_argument("--device", default="auto",
                       help=f"{', '.join(DEVICE_NAMES)} or cuda:N (default auto: cuda when available)")
    group.add_argument("--precision", choices=PRECISION_NAMES, default="auto",
                       help="default auto: bf16 on a CUDA GPU that has it, fp32 elsewhere")
    group.add_argument("--backend", choices=BACKEND_NAMES, default="eager",
                       help="default eager; an unavailable backend falls back with a warning")
    group.add_argument("--motion", choices=MOTION_NAMES, default="none",
                       help="samurai: a Kalman filter per object scores the candidate masks by motion and keeps poor "
                            "frames out of memory (SAMURAI); default none: SAM 2's own choice")
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
    parser = _Parser(prog="sam2-rt", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def parse_command_line(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The parsed command line of `sam2-rt`, with the checks no single argument can make.

    Raises:
      UsageError: a wrong command line, e.g. an --image-size that --model cannot run at (EdgeTAM's perceiver
        needs a multiple of 256).
    """
    args = build_parser().parse_args(argv)
    model = getattr(args, "model", None)
    problem = model_size_problem(model, getattr(args, "image_size", None))
    if problem is not None:
        raise UsageError(f"sam2-rt {args.command}", f"argument --image-size: {problem} (--model {model})")
    return args

"""Where `sam2-rt track` writes a run: overlay video, label PNGs, JSON Lines, rosbag2 recording.

Every output has ``write(frame, outputs, seconds)`` (called once per tracked frame, in order) and
``close()`` (always called, also after an error or Ctrl-C, so files are complete up to the last frame),
and ``summary`` (what it wrote, for the final report). Outputs are opened before the model is loaded, so an
unwritable path fails at once.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Optional, TextIO, Tuple

import cv2
import numpy as np

from sam2_rt.io.frame_outputs import FrameOutputs
from sam2_rt.io.overlay import draw_overlay
from sam2_rt.io.video import VideoFrame

logger = logging.getLogger(__name__)


class OutputError(RuntimeError):
    """An output cannot be written; the message names it and the reason."""


def frame_record(frame: VideoFrame, outputs: FrameOutputs, seconds: float) -> Dict[str, Any]:
    """One frame as a JSON-able record (a line of `--json`).

    Keys: frame (index), time (seconds since the first frame), stamp_ns and frame_id (the input's header
    for rosbag2 inputs), seconds (tracker time for the frame), objects: per object (`FrameOutputs.objects`,
    the record the rosbag2 and ROS TrackedObject messages hold too), ascending ids, id, state ("tracking" /
    "occluded" / "lost"), label (the detector class it was started with, "" = none), iou (predicted IoU,
    TrackedObject.score), presence, box [x0, y0, x1, y1] (pixels, x1 / y1 exclusive; zeros for an empty
    mask), area (mask pixels).
    """
    return {
        "frame": frame.index,
        "time": round(frame.time_s, 6),
        "stamp_ns": frame.stamp_ns,
        "frame_id": frame.frame_id,
        "seconds": round(seconds, 5),
        "objects": [
            {
                "id": obj.object_id,
                "state": obj.state.name.lower(),
                "label": obj.label,
                "iou": round(obj.score, 4),
                "presence": round(obj.presence, 4),
                "box": [round(v, 1) for v in obj.box],
                "area": obj.mask_area,
            }
            for obj in outputs.objects
        ],
    }


def _parent_folder(path: Path, what: str) -> None:
    """Create the folder of an output file, or raise OutputError naming the output."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write the {what} {path}: {error.strerror or error}") from error


class OverlayVideo:
    """The frames with masks, boxes, ids and a legend drawn (`sam2_rt.io.overlay`), as a video file.

    .avi files are Motion-JPEG, anything else (.mp4) MPEG-4 Part 2 ("mp4v"); frames of another size than
    the first are scaled to it.
    """

    def __init__(self, path: Path, fps: float, size: Tuple[int, int], alpha: float = 0.5,
                 banner: Optional[str] = None) -> None:
        self.path, self._size, self._alpha, self._banner = Path(path), size, alpha, banner
        _parent_folder(self.path, "overlay video")
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        height, width = size
        self._writer = cv2.VideoWriter(str(self.path), fourcc, fps, (width, height))
        if not self._writer.isOpened():
            raise OutputError(f"cannot write the overlay video {self.path} (not writable, or no encoder for "
                              f"{self.path.suffix or 'a file without suffix'}; use .mp4 or .avi)")
        self.frames = 0

    def write(self, frame: VideoFrame, outputs: FrameOutputs, seconds: float) -> None:
        bgr = draw_overlay(frame.rgb, outputs, self._alpha, self._banner)
        if bgr.shape[:2] != self._size:
            bgr = cv2.resize(bgr, (self._size[1], self._size[0]), interpolation=cv2.INTER_AREA)
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        self._writer.release()

    @property
    def summary(self) -> str:
        return f"overlay video {self.path} ({self.frames} frames)"


class MaskPngs:
    """One 16-bit PNG per frame, NNNNNN.png (the frame index), pixel = object id, 0 = background."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot write label images into {self.folder}: {error.strerror or error}") from error
        self.frames = 0

    def write(self, frame: VideoFrame, outputs: FrameOutputs, seconds: float) -> None:
        path = self.folder / f"{frame.index:06d}.png"
        if not cv2.imwrite(str(path), outputs.labels.astype(np.uint16, copy=False)):
            raise OutputError(f"cannot write the label image {path}")
        self.frames += 1

    def close(self) -> None:
        """Nothing to finish: every PNG is complete when written."""

    @property
    def summary(self) -> str:
        return f"label images {self.folder}/NNNNNN.png ({self.frames})"


class JsonLines:
    """One `frame_record` per line, to a file or, for "-", to stdout."""

    def __init__(self, target: str) -> None:
        self.target = target
        if target == "-":
            self._stream: TextIO = sys.stdout
        else:
            path = Path(target)
            _parent_folder(path, "JSON file")
            try:
                self._stream = open(path, "w", encoding="utf-8")
            except OSError as error:
                raise OutputError(f"cannot write the JSON file {path}: {error.strerror or error}") from error
        self.frames = 0

    def write(self, frame: VideoFrame, outputs: FrameOutputs, seconds: float) -> None:
        self._stream.write(json.dumps(frame_record(frame, outputs, seconds)) + "\n")
        self._stream.flush()
        self.frames += 1

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()

    @property
    def summary(self) -> str:
        return f"JSON Lines {'stdout' if self.target == '-' else self.target} ({self.frames} records)"


class RosbagRecording:
    """The input images, `/masks` and `/objects` as a rosbag2 recording (`sam2_rt.io.rosbag_output`)."""

    def __init__(self, path: Path, storage: str) -> None:
        from sam2_rt.io.rosbag_output import BagOutput, BagOutputError

        try:
            self._bag = BagOutput(path, storage)
        except BagOutputError as error:
            raise OutputError(str(error)) from error

    def write(self, frame: VideoFrame, outputs: FrameOutputs, seconds: float) -> None:
        self._bag.write(frame, outputs, latency_ns=int(seconds * 1e9))

    def close(self) -> None:
        self._bag.close()

    @property
    def summary(self) -> str:
        return f"rosbag2 {self._bag.path} ({self._bag.frames} frames)"

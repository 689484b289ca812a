"""Detector-driven tracking of one stream, frame by frame: the loop around `sam2_rt.detection.association`.

`DetectionDriver` runs the association policy before each frame is tracked (with that frame's detections, or
none) and remembers what it needs of the result afterwards; the node (per camera) and `sam2-rt track
--detections` both use it. `load_detections_file` reads the CLI's detection file:

    {"frames": {"<frame number>": [{"box": [x0, y0, x1, y1], "score": 0.9, "label": "person", "track_id": "7"},
                                   ...], ...}}

Frame numbers count from 0 in the order frames are tracked; boxes are pixels of the original frame; `score`
defaults to 1, `label` and `track_id` are optional (strings; a number is taken as its text).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from sam2_rt.detection.association import DetectionAssociator
from sam2_rt.detection.decisions import AssociationConfig, Decision, DecisionKind, Detection, apply_outcome
from sam2_rt.tracking.state import StreamState, TrackResult
from sam2_rt.tracking.tracker import Tracker


class DetectionFileError(ValueError):
    """A detection file that cannot be used; the message names the file and the entry."""


def observed(result: TrackResult) -> TrackResult:
    """The part of a result the association policy reads (ids, states, boxes), without the per-pixel tensors,
    so that keeping it until the next frame costs no image-sized memory."""
    empty = result.boxes.new_zeros((len(result.object_ids), 0, 0))
    return TrackResult(
        frame_index=result.frame_index, object_ids=list(result.object_ids), masks=empty.bool(), logits=empty,
        low_res_logits=empty[:, None], ious=result.ious, presence=result.presence, states=list(result.states),
        boxes=result.boxes,
    )


class DetectionDriver:
    """The association policy of one stream, driven around `Tracker.step`.

    Call `before_step` before every frame is stepped (with no detections when the detector has none for it:
    the policy keeps occlusion and LOST times current), then `after_step` with the frame's result.
    """

    def __init__(self, config: AssociationConfig) -> None:
        self.associator = DetectionAssociator(config)
        self._last: Optional[TrackResult] = None

    def before_step(
        self,
        tracker: Tracker,
        state: StreamState,
        detections: Sequence[Detection],
        frame_size: Tuple[int, int],
        reserved_ids: Iterable[int] = (),
    ) -> List[Decision]:
        """Decide what this frame's detections do and apply it to the stream (prompts apply on the next step).

        Arguments:
          reserved_ids: ids in use outside the stream (e.g. requests accepted but not applied yet): never
            issued to a new object.
        Returns:
          The decisions, with the actions the tracker refused marked as ignored.
        """
        known = set(state.object_ids) | set(reserved_ids)
        outcome = self.associator.associate(detections, frame_size, self._last, known)
        return apply_outcome(tracker, state, outcome, self.associator)

    def after_step(self, result: TrackResult) -> None:
        self._last = observed(result)

    def forget(self, object_ids: Iterable[int]) -> None:
        """Objects removed or restarted by hand: the policy no longer knows them."""
        for object_id in object_ids:
            self.associator.forget(object_id)

    def reset(self) -> None:
        """The stream was reset."""
        self.associator.reset()
        self._last = None

    def labels(self) -> Dict[int, Optional[str]]:
        """Object id -> the class label it was started with."""
        return self.associator.labels()


def started_and_removed(decisions: Sequence[Decision]) -> Tuple[List[int], List[int]]:
    """Ids of the objects the decisions started and removed."""
    started = [d.object_id for d in decisions if d.kind is DecisionKind.STARTED and d.object_id is not None]
    removed = [d.object_id for d in decisions if d.kind is DecisionKind.REMOVED and d.object_id is not None]
    return started, removed


def load_detections_file(path: Path) -> Dict[int, List[Detection]]:
    """Frame number -> detections of a detection file (format: module docstring).

    Raises:
      DetectionFileError: unreadable file, not that format, or an entry without a 4-number box.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DetectionFileError(f"{path}: cannot read detections: {err}") from None
    frames = document.get("frames") if isinstance(document, dict) else None
    if not isinstance(frames, dict):
        raise DetectionFileError(f'{path}: expected {{"frames": {{"<frame number>": [...]}}}}')
    result: Dict[int, List[Detection]] = {}
    for key, entries in frames.items():
        try:
            frame = int(key)
        except ValueError:
            raise DetectionFileError(f"{path}: frame {key!r} is not a frame number") from None
        if frame < 0 or not isinstance(entries, list):
            raise DetectionFileError(f"{path}: frame {key}: expected a frame number >= 0 and a list of detections")
        result[frame] = [_detection(entry, f"{path}: frame {key}, detection {i}") for i, entry in enumerate(entries)]
    return result


def _detection(entry: Any, origin: str) -> Detection:
    if not isinstance(entry, dict) or "box" not in entry:
        raise DetectionFileError(f"{origin}: expected an object with a 'box'")
    box = entry["box"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise DetectionFileError(f"{origin}: 'box' must be 4 numbers [x0, y0, x1, y1], got {box!r}")
    score = entry.get("score", 1.0)
    if not _is_number(score):
        raise DetectionFileError(f"{origin}: 'score' must be a number, got {score!r}")
    label, track_id = entry.get("label"), entry.get("track_id")
    return Detection(box=tuple(float(v) for v in box), score=float(score),
                     label=None if label is None else str(label), track_id=None if track_id is None else str(track_id))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""What the detection-association policy takes and gives: detections and parameters in, decisions out.

`Detection` is one detector box, `AssociationConfig` the policy's parameters, `Decision` / `AssociationOutcome`
what `sam2_rt.detection.association.DetectionAssociator.associate` decides for one frame. `check_detection`
is rule 1 of the policy (validation); `apply_outcome` turns an outcome into `Tracker.add_prompt(box=...)` /
`Tracker.remove_objects` calls on a stream.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

from sam2_rt.detection.matching import Box, box_area, checked_box
from sam2_rt.tracking.state import MAX_OBJECT_ID, StreamState, TrackerInputError
from sam2_rt.tracking.tracker import Tracker

if TYPE_CHECKING:
    from sam2_rt.detection.association import DetectionAssociator


@dataclass(frozen=True)
class Detection:
    """One box of a detector on one frame; checked by `DetectionAssociator.associate`, not here.

    Attributes:
      box: (x0, y0, x1, y1) in pixels of the original frame.
      score: detector confidence (compared with `AssociationConfig.score_threshold`).
      label: class label, e.g. "person"; None if the detector has no classes.
      track_id: the detector's own track id, if it tracks; compared as a string.
    """

    box: Sequence[float]
    score: float = 1.0
    label: Optional[str] = None
    track_id: Optional[str] = None


@dataclass(frozen=True)
class AssociationConfig:
    """Parameters of the association policy (`sam2_rt.detection.association` has the rules)."""

    # A detection and an object's box overlapping with IoU >= this are the same object.
    iou_threshold: float = 0.3
    # Detections with a lower score are ignored.
    score_threshold: float = 0.5
    # Re-acquisition gate: largest distance between the detection's box centre and the object's last known
    # box centre, in units of that box's diagonal (math.inf: any distance, class only).
    reacquire_max_distance: float = 2.0
    # An OCCLUDED object absent for at least this many consecutive frames may be re-acquired like a LOST
    # one (0: at once; set it above the tracker's lost_after_frames to wait for LOST).
    reacquire_occluded_after_frames: int = 15
    # Refresh a TRACKING object with a matching detection's box when it was last prompted at least this
    # many frames before (0: never refresh).
    refresh_every_n_frames: int = 0
    # Remove objects started from detections that are LOST for this many consecutive frames (0: never).
    remove_lost_after_frames: int = 0
    # Most objects in the stream (those added by hand included); keep it <= TrackerConfig.max_objects.
    max_objects: int = 16
    # Largest object id to issue (the tracker's limit; 65535 for a mono16 label image).
    max_object_id: int = MAX_OBJECT_ID

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not math.isfinite(self.score_threshold):
            raise ValueError(f"score_threshold must be a finite number, got {self.score_threshold}")
        if not self.reacquire_max_distance >= 0.0:  # also rejects NaN
            raise ValueError(f"reacquire_max_distance must be >= 0, got {self.reacquire_max_distance}")
        for name in ("reacquire_occluded_after_frames", "refresh_every_n_frames", "remove_lost_after_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if not 1 <= self.max_object_id <= MAX_OBJECT_ID:
            raise ValueError(f"max_object_id must be in 1..{MAX_OBJECT_ID}, got {self.max_object_id}")


class DecisionKind(str, enum.Enum):
    """What happened to a detection (or to an object, for REMOVED)."""

    STARTED = "started"  # the box starts a new object
    REACQUIRED = "reacquired"  # the box re-prompts a LOST / long-OCCLUDED object under its id
    REFRESHED = "refreshed"  # the box re-prompts a TRACKING object (refresh_every_n_frames)
    REMOVED = "removed"  # an object LOST for remove_lost_after_frames frames is removed (no detection)
    IGNORED = "ignored"  # nothing is done; see the reason


class Reason(str, enum.Enum):
    """Why a detection (or an action, when the tracker rejected it) was ignored."""

    INVALID = "invalid"  # the box is not 4 finite numbers, or the score is not finite
    EMPTY_BOX = "empty_box"  # x1 <= x0 or y1 <= y0
    OUTSIDE_FRAME = "outside_frame"  # nothing of the box lies inside the frame
    LOW_SCORE = "low_score"  # score < score_threshold
    DUPLICATE_TRACK_ID = "duplicate_track_id"  # another detection of the frame has its track id and a higher score
    ALREADY_TRACKED = "already_tracked"  # it matches a TRACKING object (no refresh due)
    OCCLUDED_BRIEFLY = "occluded_briefly"  # it matches an object occluded for too few frames to re-acquire
    DUPLICATE = "duplicate"  # it overlaps a present object it was not matched to
    MAX_OBJECTS = "max_objects"  # it would start an object beyond max_objects
    NO_FREE_ID = "no_free_id"  # every id up to max_object_id is in use
    TRACKER_REJECTED = "tracker_rejected"  # apply_outcome: the tracker refused the action


ACTIONS = (DecisionKind.STARTED, DecisionKind.REACQUIRED, DecisionKind.REFRESHED)


@dataclass(frozen=True)
class Decision:
    """One record of an outcome.

    Attributes:
      kind: what happens.
      detection_index: index of the detection in the list given to `associate`; None for REMOVED (and a
        rejected removal).
      object_id: the object concerned (started, re-acquired, refreshed, removed or matched); None when the
        detection concerns no object (invalid, low score, no capacity).
      reason: set when kind is IGNORED.
      box: for STARTED / REACQUIRED / REFRESHED, the (clipped) box to prompt the object with.
      detail: a human-readable explanation (for logs).
    """

    kind: DecisionKind
    detection_index: Optional[int]
    object_id: Optional[int]
    reason: Optional[Reason] = None
    box: Optional[Box] = None
    detail: str = ""

    def __str__(self) -> str:
        what = self.kind.value if self.reason is None else f"{self.kind.value} ({self.reason.value})"
        source = "" if self.detection_index is None else f"detection {self.detection_index}: "
        target = "" if self.object_id is None else f" object {self.object_id}"
        return f"{source}{what}{target}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class AssociationOutcome:
    """The decisions of one frame and the frame size their boxes refer to.

    Attributes:
      decisions: one per detection (in detection order), then one per removed object (ascending ids).
      frame_size: (H, W) of the frame the detections were made on.
    """

    decisions: List[Decision]
    frame_size: Tuple[int, int]

    @property
    def prompts(self) -> List[Decision]:
        """The decisions that prompt an object with a box (started, re-acquired, refreshed)."""
        return [d for d in self.decisions if d.kind in ACTIONS]

    @property
    def removals(self) -> List[int]:
        """Ids of the objects to remove."""
        return [d.object_id for d in self.decisions if d.kind is DecisionKind.REMOVED and d.object_id is not None]

    @property
    def excess(self) -> int:
        """Detections ignored for lack of room (max_objects reached or no free id)."""
        return sum(d.reason in (Reason.MAX_OBJECTS, Reason.NO_FREE_ID) for d in self.decisions)


@dataclass
class Candidate:
    """A valid detection, its box clipped to the frame (what the policy matches)."""

    index: int
    box: Box  # clipped to the frame
    score: float
    label: Optional[str]
    track_id: Optional[str]


def check_detection(
    index: int, detection: Detection, frame_size: Tuple[int, int], score_threshold: float
) -> Union[Candidate, Decision]:
    """The detection as a candidate (box clipped to the H x W frame), or the decision that ignores it."""
    height, width = frame_size
    box, problem = checked_box(detection.box)
    try:
        score = float(detection.score)
    except (TypeError, ValueError):
        score = math.nan
    clipped = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(width)), min(box[3], float(height)))
    if problem or not math.isfinite(score):
        reason, detail = Reason.INVALID, problem or f"score {detection.score!r} is not a finite number"
    elif box_area(box) <= 0:
        reason, detail = Reason.EMPTY_BOX, f"box {list(box)} has no area"
    elif box_area(clipped) <= 0:
        reason, detail = Reason.OUTSIDE_FRAME, f"box {list(box)} lies outside the {width}x{height} frame"
    elif score < score_threshold:
        reason, detail = Reason.LOW_SCORE, f"score {score:.3g} < {score_threshold}"
    else:
        label = None if detection.label is None else str(detection.label)
        track_id = None if detection.track_id is None else str(detection.track_id)
        return Candidate(index, clipped, score, label, track_id)
    return Decision(DecisionKind.IGNORED, index, None, reason, detail=detail)



def apply_outcome(
    tracker: Tracker,
    state: StreamState,
    outcome: AssociationOutcome,
    associator: Optional[DetectionAssociator] = None,
) -> List[Decision]:
    """Apply an outcome to a stream: remove objects, then prompt objects with their boxes.

    Each action is applied on its own: one the tracker rejects (TrackerInputError) becomes an IGNORED
    decision with reason TRACKER_REJECTED and the others go on. A start for an id the stream already
    knows, and a re-acquisition or refresh of an id it no longer knows, are rejected here (add_prompt would
    refine the other object, or start a new one under an old id). With `associator`, a rejected start is
    forgotten by it at once.

    Arguments:
      tracker: the tracker of the stream.
      state: the stream; prompts apply on its next `Tracker.step`.
      outcome: from `DetectionAssociator.associate`.
      associator: the associator that produced `outcome`, if it should forget rejected starts.
    Returns:
      The outcome's decisions, with rejected actions replaced.
    """
    applied: Dict[int, Decision] = {}
    removals_first = sorted(
        (i for i, d in enumerate(outcome.decisions) if d.kind is DecisionKind.REMOVED or d.kind in ACTIONS),
        key=lambda i: outcome.decisions[i].kind is not DecisionKind.REMOVED,
    )
    for position in removals_first:
        decision = outcome.decisions[position]
        try:
            _apply_decision(tracker, state, decision, outcome.frame_size)
        except TrackerInputError as error:
            applied[position] = replace(
                decision, kind=DecisionKind.IGNORED, reason=Reason.TRACKER_REJECTED, box=None,
                detail=f"{decision.kind.value} rejected: {error}",
            )
            if associator is not None and decision.kind is DecisionKind.STARTED and decision.object_id is not None:
                associator.forget(decision.object_id)
    return [applied.get(i, d) for i, d in enumerate(outcome.decisions)]


def _apply_decision(tracker: Tracker, state: StreamState, decision: Decision, frame_size: Tuple[int, int]) -> None:
    """Remove or prompt one object as `decision` (an action or REMOVED) says.

    Raises:
      TrackerInputError: the tracker refused, or the id does not fit the action (the stream is unchanged).
    """
    object_id = int(decision.object_id)  # type: ignore[arg-type]  # set on every action and removal
    known = object_id in state.object_ids
    if decision.kind is DecisionKind.REMOVED:
        tracker.remove_objects(state, [object_id])
    elif decision.kind is DecisionKind.STARTED and known:
        raise TrackerInputError(f"object id {object_id} is already in use in the stream")
    elif decision.kind is not DecisionKind.STARTED and not known:
        raise TrackerInputError(f"object {object_id} is no longer in the stream")
    else:
        tracker.add_prompt(state, object_id, box=decision.box, frame_size=frame_size)


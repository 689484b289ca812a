"""Detector-driven tracking: boxes from any detector start, refresh and re-acquire objects, keeping their ids.

A `DetectionAssociator` is fed once per frame with that frame's detections (boxes in pixels of the
original frame, score, optional class label, optional detector track id; an empty list when the detector
saw nothing or did not run) and the tracker's last `TrackResult`. It returns an `AssociationOutcome`: one
`Decision` per detection (started / re-acquired / refreshed / ignored with a reason) and one per object it
removes. `apply_outcome` turns the outcome into `Tracker.add_prompt(box=...)` / `Tracker.remove_objects`
calls on a stream (those types and functions are in `sam2_rt.detection.decisions`; the box geometry and the
one-to-one assignment in `sam2_rt.detection.matching`). The intended loop, where the detections of frame t prompt frame t itself:

    outcome = associator.associate(detections_of_frame_t, frame_size, last_result, state.object_ids)
    decisions = apply_outcome(tracker, state, outcome, associator)
    last_result = tracker.step(state, frame_t)

Rules, in the order they are applied to the valid detections of one frame (ties always go to the lower
detection index, then the lower object id, so the outcome is deterministic):
  1. Validation: a box that is not four finite numbers, or a score that is not finite, is ignored
     (INVALID); a box with x1 <= x0 or y1 <= y0 (EMPTY_BOX); a box is clipped to the frame, and one with
     nothing left inside it is ignored (OUTSIDE_FRAME); a score below `score_threshold` (LOW_SCORE).
  2. Detector track ids: a detection whose track id is bound to an object is that object, whatever its
     class or position (same detector id -> same object id). Of several detections with one track id in
     a frame the highest score wins (DUPLICATE_TRACK_ID for the others).
  3. Present objects (TRACKING, or OCCLUDED for fewer than `reacquire_occluded_after_frames` frames, or
     started by the previous outcome and not in a result yet) are matched one-to-one to detections by IoU
     with the object's reference box (its mask's box, else its last known box), greedily by IoU descending,
     pairs with IoU >= `iou_threshold` only. A detector-started object needs the same class label (None
     matches None); an object added by hand (no label) matches any label. A detection with a track id
     does not match an object bound to another track id.
  4. A detection left over that overlaps any present object's reference box with IoU >= `iou_threshold`
     would duplicate it: ignored (DUPLICATE).
  5. Re-acquirable objects (LOST, or OCCLUDED for at least `reacquire_occluded_after_frames` frames, with
     a last known box) of the same class are matched one-to-one to the remaining detections by the
     distance between box centres in units of the last known box's diagonal, greedily by distance
     ascending, within `reacquire_max_distance`. Objects added by hand have no class: they are re-acquired
     only through a detector track id bound to them by an earlier match.
  6. Every remaining detection starts a new object, best score first, while the stream holds fewer than
     `max_objects` objects (MAX_OBJECTS for the excess; NO_FREE_ID if no id is left).
A matched present object that is TRACKING is refreshed with the detection's box when
`refresh_every_n_frames` > 0 and it was last prompted at least that many frames before; otherwise the
detection is ignored (ALREADY_TRACKED; OCCLUDED_BRIEFLY when the object is briefly occluded). A matched
re-acquirable object is re-acquired: the box re-prompts that id (a new conditioning frame).
Objects the associator started and that are LOST for `remove_lost_after_frames` consecutive frames (0:
never) are removed, unless re-acquired on that frame. Objects added by hand are never removed or
refreshed: they are the user's.

What is remembered per object (`ObjectRecord`): the class label and detector track id it was started with,
its last known box (the box of its last visible mask or of its last box prompt, whichever is newer), the
last frame it was TRACKING and the frame it was last prompted. Objects that appear in a result without
having been started here were added by hand; objects that disappear from the results are forgotten.

New ids: one above the highest id this associator has seen or issued (so a removed object's id is not
given to another object soon after), and when that would pass `max_object_id`, the smallest id not in use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from sam2_rt.detection.decisions import (
    AssociationConfig,
    AssociationOutcome,
    Candidate,
    Decision,
    DecisionKind,
    Detection,
    Reason,
    check_detection,
)
from sam2_rt.detection.matching import Box, as_box, box_area, box_center_distance, box_iou, greedy_assignment
from sam2_rt.tracking.state import ObjectState, TrackResult

logger = logging.getLogger(__name__)


@dataclass
class ObjectRecord:
    """What the associator remembers about one object.

    Attributes:
      from_detector: started by the associator (False: added by hand, seen first in a result).
      label: class label it was started with (None for objects added by hand or label-less detections).
      track_id: detector track id bound to it, if any.
      last_box: last known box (last visible mask's box or last prompted box, whichever is newer), pixels.
      last_tracking_frame: last frame it was TRACKING (for a new object: the frame of its first prompt).
      last_prompt_frame: frame its last box prompt from the associator applies to (-1: never prompted).
      lost_since: first frame of its current run of LOST frames, None while it is not LOST.
    """

    from_detector: bool
    label: Optional[str]
    track_id: Optional[str]
    last_box: Optional[Box]
    last_tracking_frame: int
    last_prompt_frame: int = -1
    lost_since: Optional[int] = None


@dataclass
class _ObjectView:
    """An object as seen by one `associate` call."""

    object_id: int
    record: ObjectRecord
    state: ObjectState
    reference_box: Optional[Box]  # its mask's box if visible, else its last known box
    present: bool  # TRACKING or briefly OCCLUDED (or pending): detections over it would duplicate it
    reacquirable: bool


@dataclass
class _Match:
    """A detection assigned to an object, and how it was found (for the decision's detail)."""

    candidate: Candidate
    view: _ObjectView
    how: str


class DetectionAssociator:
    """The detection-association policy of one stream (see the module docstring).

    Arguments:
      config: the policy's parameters.
    """

    def __init__(self, config: AssociationConfig = AssociationConfig()) -> None:
        self.config = config
        self._records: Dict[int, ObjectRecord] = {}
        self._object_of_track: Dict[str, int] = {}
        self._highest_id = 0
        self._last_frame_index = -1

    # ------------------------------------------------------------------ what it knows

    @property
    def objects(self) -> Mapping[int, ObjectRecord]:
        """Read-only view of the remembered objects by id (do not modify the records)."""
        return MappingProxyType(self._records)

    def labels(self) -> Dict[int, Optional[str]]:
        """Class label each remembered object was started with (None: added by hand or no class)."""
        return {object_id: record.label for object_id, record in self._records.items()}

    def reset(self) -> None:
        """Forget every object and binding (call it when the tracker's stream is reset)."""
        self._records.clear()
        self._object_of_track.clear()
        self._highest_id = 0
        self._last_frame_index = -1

    def forget(self, object_id: int) -> None:
        """Forget one object and its track id binding (e.g. when the tracker refused to start it)."""
        record = self._records.pop(object_id, None)
        if record is not None and record.track_id is not None:
            self._object_of_track.pop(record.track_id, None)

    # ------------------------------------------------------------------ the policy

    def associate(
        self,
        detections: Sequence[Detection],
        frame_size: Tuple[int, int],
        last_result: Optional[TrackResult] = None,
        stream_ids: Iterable[int] = (),
    ) -> AssociationOutcome:
        """Decide what the detections of one frame do; remember the objects' states from `last_result`.

        Call it once per stepped frame (with no detections if there are none), before stepping the frame
        the detections were made on, so that last boxes, occlusion and LOST times stay current.

        Arguments:
          detections: the detector's boxes of this frame (any may be invalid: it is ignored with a reason).
          frame_size: (H, W) of the frame the detections were made on, in pixels.
          last_result: the tracker's result of the previous frame of the stream; None before its first one.
          stream_ids: the stream's object ids (`StreamState.object_ids`), which may include objects added
            since `last_result`: their ids are not issued again and they count towards max_objects.
        Returns:
          The outcome; the associator already remembers the objects it starts, re-acquires or refreshes.
        """
        height, width = int(frame_size[0]), int(frame_size[1])
        views = self._observe(last_result)
        frame = last_result.frame_index if last_result is not None else -1
        next_frame = frame + 1
        decisions: Dict[int, Decision] = {}
        candidates = self._validate(detections, (height, width), decisions)

        present = [v for v in views if v.present]
        matches = self._match_track_ids(candidates, views, decisions)
        free = _unmatched(candidates, matches, decisions)
        taken = {m.view.object_id for m in matches}
        matches += self._match_overlaps(free, [v for v in present if v.object_id not in taken])
        free = self._ignore_duplicates(_unmatched(free, matches, decisions), present, decisions)
        taken = {m.view.object_id for m in matches}
        matches += self._match_reacquirable(free, [v for v in views if v.reacquirable and v.object_id not in taken])
        free = _unmatched(free, matches, decisions)

        for match in matches:
            decisions[match.candidate.index] = self._act_on_match(match, next_frame)
        removals = self._removals(views, frame, {m.view.object_id for m in matches})
        in_use = ({v.object_id for v in views} | set(stream_ids)) - {object_id for object_id, _ in removals}
        self._start_objects(free, in_use, next_frame, decisions)
        removed: List[Decision] = []
        for object_id, lost_frames in removals:
            self.forget(object_id)
            removed.append(Decision(DecisionKind.REMOVED, None, object_id, detail=f"LOST for {lost_frames} frames"))
        ordered = [decisions[index] for index in sorted(decisions)]
        return AssociationOutcome(decisions=ordered + removed, frame_size=(height, width))

    def _observe(self, result: Optional[TrackResult]) -> List[_ObjectView]:
        """Update the records from a result; return the views of the objects in it and of pending ones."""
        views: List[_ObjectView] = []
        frame, in_result = -1, set()
        if result is not None:
            frame, in_result = result.frame_index, set(result.object_ids)
            if frame < self._last_frame_index:
                logger.info("frame index went back from %d to %d: the stream was reset, forgetting all objects",
                            self._last_frame_index, frame)
                self.reset()
            self._last_frame_index = frame
            self._highest_id = max([self._highest_id, *in_result])
            views = self._observe_result(result)
        for object_id in sorted(set(self._records) - in_result):
            record = self._records[object_id]
            if record.last_prompt_frame > frame:  # started by an outcome not stepped yet
                views.append(_ObjectView(object_id, record, ObjectState.TRACKING, record.last_box, True, False))
            else:  # removed, or its start was refused
                self.forget(object_id)
        return views

    def _observe_result(self, result: TrackResult) -> List[_ObjectView]:
        """Update the records of the objects in a result; return their views."""
        frame = result.frame_index
        boxes = result.boxes.detach().cpu().tolist()
        views: List[_ObjectView] = []
        for object_id, state, mask_box in zip(result.object_ids, result.states, boxes):
            visible_box = as_box(mask_box) if box_area(as_box(mask_box)) > 0 else None
            record = self._records.get(object_id)
            if record is None:  # added by hand (or by anyone else): protected from duplicates only
                record = ObjectRecord(from_detector=False, label=None, track_id=None, last_box=None,
                                      last_tracking_frame=frame)
                self._records[object_id] = record
            if state is ObjectState.TRACKING:
                record.last_tracking_frame = frame
                if visible_box is not None:
                    record.last_box = visible_box
            if state is not ObjectState.LOST:
                record.lost_since = None
            elif record.lost_since is None:
                record.lost_since = frame
            views.append(self._view(object_id, record, state, visible_box, frame))
        return views

    def _view(
        self, object_id: int, record: ObjectRecord, state: ObjectState, visible_box: Optional[Box], frame: int
    ) -> _ObjectView:
        absent_for = frame - record.last_tracking_frame
        long_absent = state is ObjectState.LOST or (
            state is ObjectState.OCCLUDED and absent_for >= self.config.reacquire_occluded_after_frames
        )
        reference = visible_box if state is ObjectState.TRACKING and visible_box is not None else record.last_box
        return _ObjectView(object_id, record, state, reference, present=not long_absent, reacquirable=long_absent)

    def _validate(
        self, detections: Sequence[Detection], frame_size: Tuple[int, int], decisions: Dict[int, Decision]
    ) -> List[Candidate]:
        """Valid detections with their boxes clipped to the frame; a decision for each invalid one."""
        candidates: List[Candidate] = []
        for index, detection in enumerate(detections):
            checked = check_detection(index, detection, frame_size, self.config.score_threshold)
            if isinstance(checked, Decision):
                decisions[index] = checked
            else:
                candidates.append(checked)
        return candidates

    def _match_track_ids(
        self, candidates: List[Candidate], views: List[_ObjectView], decisions: Dict[int, Decision]
    ) -> List[_Match]:
        """Rule 2: detections whose track id is bound to an object in `views`."""
        view_of = {v.object_id: v for v in views}
        matches: Dict[str, _Match] = {}
        for candidate in sorted(candidates, key=lambda c: (-c.score, c.index)):
            object_id = self._object_of_track.get(candidate.track_id) if candidate.track_id is not None else None
            if object_id is None or object_id not in view_of:
                continue
            if candidate.track_id in matches:
                winner = matches[candidate.track_id].candidate.index
                decisions[candidate.index] = Decision(
                    DecisionKind.IGNORED, candidate.index, object_id, Reason.DUPLICATE_TRACK_ID,
                    detail=f"detection {winner} has track id {candidate.track_id!r} with a higher score",
                )
                continue
            matches[candidate.track_id] = _Match(candidate, view_of[object_id], f"track id {candidate.track_id!r}")
        return list(matches.values())

    def _match_overlaps(self, candidates: List[Candidate], present: List[_ObjectView]) -> List[_Match]:
        """Rule 3: greedy one-to-one matching by IoU descending, IoU >= iou_threshold, compatible pairs."""
        pairs = []
        for candidate in candidates:
            for view in present:
                if view.reference_box is None or not self._compatible(candidate, view, by_class_only=False):
                    continue
                iou = box_iou(candidate.box, view.reference_box)
                if iou >= self.config.iou_threshold:
                    pairs.append((-iou, candidate.index, view.object_id, candidate, view))
        return [_Match(c, v, f"IoU {-key:.2f}") for key, c, v in greedy_assignment(pairs)]

    def _ignore_duplicates(
        self, candidates: List[Candidate], present: List[_ObjectView], decisions: Dict[int, Decision]
    ) -> List[Candidate]:
        """Rule 4: ignore detections over a present object they were not matched to; return the others."""
        remaining = []
        for candidate in candidates:
            overlaps = [(box_iou(candidate.box, v.reference_box), -v.object_id, v.object_id)
                        for v in present if v.reference_box is not None]
            iou, _, object_id = max(overlaps, default=(0.0, 0, 0))
            if iou >= self.config.iou_threshold:
                decisions[candidate.index] = Decision(
                    DecisionKind.IGNORED, candidate.index, object_id, Reason.DUPLICATE,
                    detail=f"IoU {iou:.2f} with object {object_id}, matched elsewhere or of another class",
                )
            else:
                remaining.append(candidate)
        return remaining

    def _match_reacquirable(self, candidates: List[Candidate], lost: List[_ObjectView]) -> List[_Match]:
        """Rule 5: greedy one-to-one matching by gated centre distance (in last-box diagonals), same class."""
        pairs = []
        for candidate in candidates:
            for view in lost:
                if view.reference_box is None or not self._compatible(candidate, view, by_class_only=True):
                    continue
                distance = box_center_distance(candidate.box, view.reference_box)
                if distance <= self.config.reacquire_max_distance:
                    pairs.append((distance, candidate.index, view.object_id, candidate, view))
        return [_Match(c, v, f"{key:.2f} box diagonals from its last box") for key, c, v in greedy_assignment(pairs)]

    def _compatible(self, candidate: Candidate, view: _ObjectView, by_class_only: bool) -> bool:
        """Whether a detection may be matched to an object by overlap (or, `by_class_only`, by distance)."""
        record = view.record
        if candidate.track_id is not None and record.track_id not in (None, candidate.track_id):
            return False
        if not record.from_detector:
            return not by_class_only  # objects added by hand have no class to compare
        return record.label == candidate.label

    def _act_on_match(self, match: _Match, next_frame: int) -> Decision:
        """The decision for a matched pair; updates the object's record for the prompt it gets."""
        candidate, view, record = match.candidate, match.view, match.view.record
        if candidate.track_id is not None and record.track_id is None:
            record.track_id = candidate.track_id
            self._object_of_track[candidate.track_id] = view.object_id
        kind: DecisionKind = DecisionKind.IGNORED
        reason: Optional[Reason] = None
        if view.reacquirable:
            kind = DecisionKind.REACQUIRED
        elif view.state is not ObjectState.TRACKING:
            reason = Reason.OCCLUDED_BRIEFLY
        elif record.from_detector and self._refresh_due(record, next_frame):
            kind = DecisionKind.REFRESHED
        else:
            reason = Reason.ALREADY_TRACKED
        if reason is not None:
            return Decision(kind, candidate.index, view.object_id, reason, detail=match.how)
        record.last_box = candidate.box
        record.last_prompt_frame = next_frame
        record.lost_since = None  # a re-prompted object starts a new LOST time (removal clock)
        return Decision(kind, candidate.index, view.object_id, box=candidate.box, detail=match.how)

    def _refresh_due(self, record: ObjectRecord, next_frame: int) -> bool:
        every = self.config.refresh_every_n_frames
        return every > 0 and next_frame - record.last_prompt_frame >= every

    def _removals(self, views: List[_ObjectView], frame: int, matched: Set[int]) -> List[Tuple[int, int]]:
        """(id, LOST frames) of the objects started here that are LOST for remove_lost_after_frames frames
        and not matched now, ascending ids."""
        limit = self.config.remove_lost_after_frames
        removals = []
        for view in sorted(views, key=lambda v: v.object_id):
            lost_since = view.record.lost_since
            if limit == 0 or not view.record.from_detector or view.object_id in matched or lost_since is None:
                continue
            if frame - lost_since + 1 >= limit:
                removals.append((view.object_id, frame - lost_since + 1))
        return removals

    def _start_objects(
        self, candidates: List[Candidate], in_use: Set[int], next_frame: int, decisions: Dict[int, Decision]
    ) -> None:
        """Rule 6: start an object for each remaining detection, best score first, within the bounds."""
        for candidate in sorted(candidates, key=lambda c: (-c.score, c.index)):
            if len(in_use) >= self.config.max_objects:
                decisions[candidate.index] = Decision(
                    DecisionKind.IGNORED, candidate.index, None, Reason.MAX_OBJECTS,
                    detail=f"the stream has max_objects={self.config.max_objects} objects",
                )
                continue
            object_id = self._new_id(in_use)
            if object_id is None:
                decisions[candidate.index] = Decision(
                    DecisionKind.IGNORED, candidate.index, None, Reason.NO_FREE_ID,
                    detail=f"every id up to {self.config.max_object_id} is in use",
                )
                continue
            in_use.add(object_id)
            self._records[object_id] = ObjectRecord(
                from_detector=True, label=candidate.label, track_id=candidate.track_id, last_box=candidate.box,
                last_tracking_frame=next_frame, last_prompt_frame=next_frame,
            )
            if candidate.track_id is not None:
                self._object_of_track[candidate.track_id] = object_id
            detail = f"label {candidate.label!r}" + (
                f", track id {candidate.track_id!r}" if candidate.track_id is not None else "")
            decisions[candidate.index] = Decision(
                DecisionKind.STARTED, candidate.index, object_id, box=candidate.box, detail=detail
            )

    def _new_id(self, in_use: Set[int]) -> Optional[int]:
        """One above the highest id seen, else the smallest free one; None if every id is taken."""
        self._highest_id = max([self._highest_id, *in_use])
        if self._highest_id < self.config.max_object_id:
            self._highest_id += 1
            return self._highest_id
        return next((i for i in range(1, self.config.max_object_id + 1) if i not in in_use), None)


def _unmatched(candidates: List[Candidate], matches: List[_Match], decisions: Dict[int, Decision]) -> List[Candidate]:
    """The candidates neither matched nor decided yet."""
    matched = {m.candidate.index for m in matches}
    return [c for c in candidates if c.index not in matched and c.index not in decisions]

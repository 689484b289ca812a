"""What one stream (camera) owns, and what a step gives back: its objects, their states, their pending prompts
and its bounded memory bank. `StreamState` changes only through its own methods, which the tracker calls."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from sam2_rt.tracking.memory import EMPTY, MemoryBank
from sam2_rt.tracking.motion import MotionState
from sam2_rt.tracking.transforms import label_image

# Largest object id (the label image is int32; 0 is background).
MAX_OBJECT_ID = 2**31 - 1


class TrackerInputError(ValueError):
    """A frame or prompt the tracker cannot use. The stream's state is unchanged when it is raised."""


class ObjectState(enum.IntEnum):
    """Per-object tracking state of one frame."""

    TRACKING = 0  # the object is predicted present (object score > 0)
    OCCLUDED = 1  # predicted absent on this frame
    LOST = 2  # predicted absent for more than TrackerConfig.lost_after_frames consecutive frames


@dataclass
class TrackResult:
    """What `Tracker.step` returns for one frame (N objects, frame of H x W pixels, S = image_size).

    Attributes:
      frame_index: index of the frame in its stream (0 for the first frame after creation or reset).
      object_ids: the N object ids, in the order of every tensor below.
      masks: (N, H, W) bool masks at the frame's resolution.
      logits: (N, H, W) float32 mask logits at the frame's resolution (mask = logits > 0).
      low_res_logits: (N, 1, S/4, S/4) float32 mask logits as the model produced them.
      ious: (N,) float32 predicted IoU of each mask (1 for a mask prompt).
      presence: (N,) float32 probability that the object is visible, sigmoid(object score).
      states: per object, TRACKING / OCCLUDED / LOST.
      boxes: (N, 4) float32 (x0, y0, x1, y1) enclosing each mask in pixels (x1, y1 exclusive), zeros if empty.
    """

    frame_index: int
    object_ids: List[int]
    masks: torch.Tensor
    logits: torch.Tensor
    low_res_logits: torch.Tensor
    ious: torch.Tensor
    presence: torch.Tensor
    states: List[ObjectState]
    boxes: torch.Tensor

    def label_image(self) -> torch.Tensor:
        """(H, W) int32 image: object id per pixel, 0 for background; the higher logit wins on overlap."""
        return label_image(self.logits, torch.tensor(self.object_ids, dtype=torch.int32))


@dataclass
class PreparedPrompt:
    """A validated prompt in model coordinates (`Tracker.prepare_prompt`), queued for the next frame.

    Either points (with labels; a box is its two first points, labels 2 and 3) or a mask.
    """

    points: Optional[torch.Tensor] = None  # (P, 2) float32 x, y in pixels of the S x S model input (CPU)
    labels: Optional[torch.Tensor] = None  # (P,) int32 Meta's point labels (CPU)
    mask: Optional[torch.Tensor] = None  # (1, S, S) float32 0/1 on the model's device

    def tensors(self) -> Tuple[Optional[torch.Tensor], ...]:
        return self.points, self.labels, self.mask


@dataclass(frozen=True, eq=False)
class StreamSnapshot:
    """A copy of everything a stream holds (`StreamState.snapshot`); equal snapshots mean an unchanged stream."""

    frame_index: int
    frame_size: Optional[Tuple[int, int]]
    object_ids: Tuple[int, ...]
    absent_frames: Tuple[int, ...]
    pending: Dict[int, Tuple[Optional[torch.Tensor], ...]] = field(repr=False)
    bank: Tuple[torch.Tensor, ...] = field(repr=False)
    nbytes: int = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamSnapshot):
            return NotImplemented
        return not self.differences(other)

    def differences(self, other: "StreamSnapshot") -> List[str]:
        """The names of the fields that differ (for a test's failure message)."""
        return [f.name for f in fields(self) if not _field_equal(getattr(self, f.name), getattr(other, f.name), f.name)]


def _field_equal(x: object, y: object, name: str) -> bool:
    if name == "bank":
        return len(x) == len(y) and all(map(_same, x, y))  # type: ignore[arg-type]
    if name == "pending":
        return x.keys() == y.keys() and all(_same(p, q) for key in x for p, q in zip(x[key], y[key]))  # type: ignore
    return bool(x == y)


def _same(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


@dataclass
class StreamState:
    """Everything one stream (camera) owns; create it with `Tracker.create_stream`.

    Attributes:
      frame_index: index the next stepped frame gets.
      frame_size: (H, W) of the last frame stepped, None before the first frame.
    """

    frame_index: int
    frame_size: Optional[Tuple[int, int]]
    _bank: MemoryBank
    # ids of the objects in the bank, row order
    _ids: List[int] = field(default_factory=list)
    # consecutive frames each object (row order) was absent
    _absent_frames: List[int] = field(default_factory=list)
    # prompts to apply on the next frame, by object id (new objects in the order they were added)
    _pending: Dict[int, PreparedPrompt] = field(default_factory=dict)
    # motion="samurai": each object's Kalman filter, rows like the bank's
    _motion: Optional[MotionState] = None

    # ------------------------------------------------------------------ reading

    @property
    def object_ids(self) -> List[int]:
        """Ids of the stream's objects: tracked ones, then new ones whose first prompt is pending."""
        return self._ids + [obj_id for obj_id in self._pending if obj_id not in self._ids]

    @property
    def memory(self) -> MemoryBank:
        """The stream's memory bank (rows in the order of the tracked objects)."""
        return self._bank

    @property
    def motion(self) -> Optional[MotionState]:
        """The objects' Kalman filters (motion="samurai"), rows like the memory bank's; None otherwise."""
        return self._motion

    def first_frames(self, count: int) -> List[int]:
        """The first prompted frame of each of the first `count` rows (-1 for a row never prompted)."""
        frames = self._bank.cond_frames[:count]
        first = torch.where(frames == EMPTY, torch.iinfo(torch.int64).max, frames).amin(dim=1)
        return torch.where(first == torch.iinfo(torch.int64).max, EMPTY, first).tolist()

    @property
    def absent_frames(self) -> Tuple[int, ...]:
        """Consecutive frames each tracked object was absent, in row order."""
        return tuple(self._absent_frames)

    @property
    def pending_ids(self) -> List[int]:
        """Ids with a prompt queued for the next frame, in the order they were queued."""
        return list(self._pending)

    def pending_prompt(self, object_id: int) -> Optional[PreparedPrompt]:
        """The prompt queued for `object_id`, None if it has none."""
        return self._pending.get(object_id)

    def remembered(self, count: int) -> List[bool]:
        """Whether each of the first `count` rows has a memory (its object was prompted on an earlier frame)."""
        return self._bank.cond_frames[:count].ne(EMPTY).any(dim=1).tolist()

    def state_nbytes(self) -> int:
        """Bytes of all tensors the stream holds (memory bank and pending prompts)."""
        pending = sum(t.numel() * t.element_size() for prompt in self._pending.values()
                      for t in prompt.tensors() if t is not None)
        return self._bank.nbytes() + pending + (self._motion.nbytes() if self._motion is not None else 0)

    def _tensors(self) -> Tuple[torch.Tensor, ...]:
        return tuple(self._bank.tensors()) + (self._motion.tensors() if self._motion is not None else ())

    def snapshot(self) -> StreamSnapshot:
        """A copy of everything the stream holds, to compare with a later one."""
        return StreamSnapshot(
            frame_index=self.frame_index,
            frame_size=self.frame_size,
            object_ids=tuple(self.object_ids),
            absent_frames=tuple(self._absent_frames),
            pending={k: tuple(None if t is None else t.clone() for t in p.tensors()) for k, p in self._pending.items()},
            bank=tuple(t.clone() for t in self._tensors()),
            nbytes=self.state_nbytes(),
        )

    # ------------------------------------------------------------------ changing (by the tracker)

    def queue(self, object_id: int, prompt: PreparedPrompt) -> None:
        """Queue `prompt` for the next frame (replacing one queued earlier for the same object)."""
        self._pending[int(object_id)] = prompt

    def clear(self) -> None:
        """Forget every object and prompt; the next frame is frame 0 (memory stays allocated)."""
        self._bank.clear()
        if self._motion is not None:
            self._motion.clear()
        self._ids.clear()
        self._absent_frames.clear()
        self._pending.clear()
        self.frame_index = 0
        self.frame_size = None

    def remove(self, ids: Sequence[int]) -> None:
        """Forget the given objects (also ones whose first prompt is pending); the bank's rows are compacted.

        Raises:
          TrackerInputError: an id the stream does not know (nothing is removed then).
        """
        known = set(self.object_ids)
        unknown = [obj_id for obj_id in ids if obj_id not in known]
        if unknown:
            raise TrackerInputError(f"cannot remove unknown object ids {unknown}; known ids: {self.object_ids}")
        removed = set(ids)
        for obj_id in removed:
            self._pending.pop(obj_id, None)
        keep = [row for row, obj_id in enumerate(self._ids) if obj_id not in removed]
        if len(keep) < len(self._ids):
            self._bank.keep_rows(keep, len(self._ids))
            if self._motion is not None:
                self._motion.keep_rows(keep, len(self._ids))
            self._ids[:] = [self._ids[row] for row in keep]
            self._absent_frames[:] = [self._absent_frames[row] for row in keep]

    def commit(self, object_ids: Sequence[int], frame_size: Tuple[int, int], absent: Sequence[bool],
               lost_after: int) -> List[ObjectState]:
        """Move past a stepped frame whose objects were `object_ids` (its memory already written): prompts are
        cleared, the frame index and size advance, and each object's absence count gives its state (LOST after
        more than `lost_after` consecutive absent frames)."""
        self._absent_frames.extend([0] * (len(object_ids) - len(self._ids)))
        self._ids = list(object_ids)
        self._pending.clear()
        self.frame_index += 1
        self.frame_size = frame_size
        states = []
        for row, is_absent in enumerate(absent):
            self._absent_frames[row] = self._absent_frames[row] + 1 if is_absent else 0
            if self._absent_frames[row] > lost_after:
                states.append(ObjectState.LOST)
            else:
                states.append(ObjectState.OCCLUDED if is_absent else ObjectState.TRACKING)
        return states

    def skip_ahead(self, frames: int) -> None:
        """Warm-up only: jump `frames` frames ahead with every recent memory slot filled by copies of the last
        frame's (`MemoryBank.fill_history`), the state a stream reaches after that many tracked frames."""
        last = self.frame_index - 1
        self.frame_index += frames
        self._bank.fill_history(len(self._ids), last, self.frame_index)

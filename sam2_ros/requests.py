"""Prompt, remove and reset requests: validated and answered at once, applied by the worker on the next frame.

The services and the prompt topic never wait for a model step. Each camera has an `ObjectBook`: the ids its
stream will hold once the queued requests are applied, the size of its last image, and the queue itself. A
request is checked against the book (known ids, max_objects, the image size the coordinates refer to) and
the tracker's own prompt validation (`Tracker.prepare_prompt`, which touches no stream), queued, and answered;
the worker drains the queue right before it steps that camera's next frame, so a prompt applies to the next
processed frame, as it always did. The book's lock is held for microseconds, never during a model step.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from sam2_ros.conversions import ImageConversionError, image_to_numpy
from sam2_ros.msg import Prompt
from sam2_rt import PreparedPrompt, StreamState, Tracker, TrackerInputError

# Requests waiting for the next frame, per camera. Past this, new ones are rejected with a reason: a flood of
# prompts (an operator clicking wildly, a runaway client) cannot grow memory while no frame arrives.
MAX_QUEUED_REQUESTS = 64

# The answers of the services (tests/ros_peer.py serves the same ones).
RESET_MESSAGE = "all objects forgotten"


def prompt_accepted_message(object_id: int, action: str) -> str:
    """The answer to an accepted prompt; action: "added", "refined" or "replaced"."""
    return f"object {object_id} {action}; the prompt applies to the next frame"


def removal_message(object_ids: Sequence[int]) -> str:
    """The answer to an accepted removal."""
    return f"removed objects {list(object_ids)}"


def unknown_ids_message(unknown: Sequence[int], known: Sequence[int]) -> str:
    """Why a removal of ids the stream does not track is refused."""
    return f"cannot remove unknown object ids {list(unknown)}; known ids: {list(known)}"


_MODE_NAMES = {Prompt.MODE_ADD: "MODE_ADD", Prompt.MODE_REFINE: "MODE_REFINE", Prompt.MODE_REPLACE: "MODE_REPLACE"}


@dataclass(frozen=True)
class PromptRequest:
    """The tracker arguments of one Prompt message (coordinates in pixels of the original image)."""

    object_id: int
    mode: int
    points: Optional[np.ndarray]  # (N, 2) float64 x, y
    labels: Optional[np.ndarray]  # (N,) int64 0 / 1
    box: Optional[np.ndarray]  # (4,) float64 x0, y0, x1, y1
    mask: Optional[np.ndarray]  # (H, W) bool

    @classmethod
    def from_message(cls, msg: Prompt) -> "PromptRequest":
        """Read a Prompt message. Content is validated by the tracker; this checks only the message itself.

        Raises:
          TrackerInputError: object_id 0, unknown mode, or a mask image that is not one 8/16-bit channel.
        """
        if msg.object_id == 0:
            raise TrackerInputError("object_id 0 is the background of the label image: use ids >= 1")
        if msg.mode not in _MODE_NAMES:
            raise TrackerInputError(f"unknown prompt mode {msg.mode} (MODE_ADD=0, MODE_REFINE=1, MODE_REPLACE=2)")
        mask = None
        if msg.mask.width or msg.mask.height or len(msg.mask.data):
            try:
                mask_pixels = image_to_numpy(msg.mask)
            except ImageConversionError as err:
                raise TrackerInputError(f"mask prompt: {err}") from None
            if mask_pixels.ndim != 2:
                raise TrackerInputError(
                    f"mask prompt must have one channel (mono8, 8UC1, mono16 or 16UC1), got {msg.mask.encoding}"
                )
            mask = mask_pixels != 0
        points = np.array([(p.x, p.y) for p in msg.points], dtype=np.float64).reshape(-1, 2) if msg.points else None
        labels = np.asarray(msg.labels, dtype=np.int64) if len(msg.labels) else None
        box = np.asarray(msg.box, dtype=np.float64) if msg.has_box else None
        return cls(int(msg.object_id), int(msg.mode), points, labels, box, mask)


@dataclass(frozen=True)
class QueuedPrompt:
    """Start, refine or (replace=True: forget, then start) one object on the next frame."""

    object_id: int
    prompt: PreparedPrompt
    replace: bool


@dataclass(frozen=True)
class QueuedRemoval:
    object_ids: Tuple[int, ...]


@dataclass(frozen=True)
class QueuedReset:
    pass


QueuedRequest = Union[QueuedPrompt, QueuedRemoval, QueuedReset]


class ObjectBook:
    """One camera's accepted requests and the ids its stream will hold once they apply (thread-safe).

    Arguments:
      tracker: validates prompts (`prepare_prompt`, `check_new_object`); its streams are not touched here.
      max_queued: most requests waiting for the next frame.
    """

    def __init__(self, tracker: Tracker, max_queued: int = MAX_QUEUED_REQUESTS) -> None:
        self._tracker = tracker
        self._max_queued = max_queued
        self._lock = threading.Lock()
        self._ids: List[int] = []  # in the order the stream will hold them
        self._queue: List[QueuedRequest] = []
        self._frame_size: Optional[Tuple[int, int]] = None

    # ------------------------------------------------------------------ the executor thread (callbacks)

    def submit_prompt(self, request: PromptRequest) -> str:
        """Validate a prompt and queue it; returns the confirmation.

        Raises:
          TrackerInputError: invalid prompt, MODE_REFINE of an unknown id, no image seen yet, max_objects
            reached or the queue full. Nothing changes then.
        """
        with self._lock:
            self._check_room()
            if self._frame_size is None:
                raise TrackerInputError(
                    "no image received yet: prompt coordinates are pixels of the image, whose size is not known"
                )
            known = request.object_id in self._ids
            if request.mode == Prompt.MODE_REFINE and not known:
                raise TrackerInputError(
                    f"object {request.object_id} is not tracked: MODE_REFINE needs a tracked id (MODE_ADD starts one)"
                )
            self._tracker.check_new_object(self._ids, request.object_id)
            prepared = self._tracker.prepare_prompt(
                self._frame_size, points=request.points, labels=request.labels, box=request.box, mask=request.mask
            )
            replace = request.mode == Prompt.MODE_REPLACE and known
            self._queue.append(QueuedPrompt(request.object_id, prepared, replace))
            if not known:
                self._ids.append(request.object_id)
        action = "replaced" if replace else "refined" if known else "added"
        return prompt_accepted_message(request.object_id, action)

    def submit_removal(self, object_ids: Sequence[int]) -> List[int]:
        """Queue the removal of `object_ids`; returns the ids that remain.

        Raises:
          TrackerInputError: an id that is not tracked (nothing is removed), or the queue is full.
        """
        with self._lock:
            self._check_room()
            unknown = [obj_id for obj_id in object_ids if obj_id not in self._ids]
            if unknown:
                raise TrackerInputError(unknown_ids_message(unknown, self._ids))
            removed = set(object_ids)
            self._ids = [obj_id for obj_id in self._ids if obj_id not in removed]
            self._queue.append(QueuedRemoval(tuple(object_ids)))
            return sorted(self._ids)

    def submit_reset(self) -> None:
        """Forget every object at the next frame. Earlier queued requests are dropped: they would be undone."""
        with self._lock:
            self._ids = []
            self._queue = [QueuedReset()]

    def object_ids(self) -> List[int]:
        """The ids the stream holds once the queued requests apply, ascending."""
        with self._lock:
            return sorted(self._ids)

    def queued(self) -> int:
        """Number of requests waiting for the next frame."""
        with self._lock:
            return len(self._queue)

    def _check_room(self) -> None:
        if len(self._queue) >= self._max_queued:
            raise TrackerInputError(
                f"{len(self._queue)} requests already wait for the next frame (the limit): try again after it"
            )

    # ------------------------------------------------------------------ the worker

    def set_frame_size(self, size: Tuple[int, int]) -> Optional[Tuple[int, int]]:
        """Record the size (H, W) of the camera's newest image; returns the previous size if it differs."""
        with self._lock:
            previous, self._frame_size = self._frame_size, size
        return previous if previous is not None and previous != size else None

    def drain(self) -> List[QueuedRequest]:
        """Take the queued requests, oldest first."""
        with self._lock:
            requests, self._queue = self._queue, []
        return requests

    def adopt(self, object_ids: Sequence[int]) -> None:
        """The worker started these objects itself (the detection policy): requests now see them."""
        with self._lock:
            self._ids += [obj_id for obj_id in object_ids if obj_id not in self._ids]

    def forget(self, object_ids: Sequence[int]) -> None:
        """The worker removed these objects itself (e.g. the detection policy dropped long-lost ones)."""
        with self._lock:
            gone = set(object_ids)
            self._ids = [obj_id for obj_id in self._ids if obj_id not in gone]


def apply_requests(
    tracker: Tracker, stream: StreamState, requests: Sequence[QueuedRequest]
) -> List[Tuple[QueuedRequest, TrackerInputError]]:
    """Apply drained requests to the stream, in order (the worker, right before stepping its frame).

    Each request applies on its own. Returns the ones the stream refused, with the reason: only possible when
    the stream changed between validation and now (the detection policy took the last object slot).
    """
    refused = []
    for request in requests:
        try:
            if isinstance(request, QueuedPrompt):
                if request.replace and request.object_id in stream.object_ids:
                    tracker.remove_objects(stream, [request.object_id])
                tracker.queue_prompt(stream, request.object_id, request.prompt)
            elif isinstance(request, QueuedRemoval):
                tracker.remove_objects(stream, request.object_ids)
            else:
                tracker.reset(stream)
        except TrackerInputError as err:
            refused.append((request, err))
    return refused

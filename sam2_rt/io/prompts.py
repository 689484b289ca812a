"""Prompts of `sam2-rt track`: clicks and boxes from the command line, prompt files, applied frame by frame.

A prompt is a `PromptEvent` (add / refine / remove objects). Events come from *prompt providers*: any object
with ``events_for(frame) -> list of PromptEvent``, asked once per frame in order; the command line and a
prompt file are each one `PromptSchedule` (events at frame numbers or timestamps), and other providers
(e.g. a detector) can join the list `sam2_rt.cli.loop.track_frames` asks. `apply_events` hands a frame's events
to the tracker before that frame is tracked. USER_GUIDE (shown by `sam2-rt track --help`) is the format.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from sam2_rt.io.frame_outputs import MAX_OUTPUT_OBJECT_ID
from sam2_rt.tracking.state import StreamState, TrackerInputError
from sam2_rt.tracking.tracker import Tracker
from sam2_rt.io.video import VideoFrame

ACTIONS = ("add", "refine", "remove")
USER_GUIDE = """\
  --point X,Y[,LABEL][@OBJ]   a click on the first frame; LABEL 1 (default) = on the object, 0 = background;
                              OBJ (default 1) the object id. Several points of one object form one prompt.
  --box X0,Y0,X1,Y1[@OBJ]     a box (top-left, bottom-right) on the first frame; with points of the same
                              object: one prompt.
  --prompts FILE              prompts later in the video too. FILE (.json, or .yaml / .yml) holds a list of
                              prompts, or {"prompts": [...]}; each prompt has:
    frame: N  or  time: S     when: a frame number (0 = first), or seconds since the first frame (applied
                              on the first frame at or after that time)
    object: ID                the object id (1..65535); remove also takes objects: [ID, ...]
    action: add|refine|remove add (default): a new object, or more prompts for a known one; refine: a
                              tracked object only; remove: stop tracking it
    points: [[X, Y], ...]     clicks, pixels of the input frame (x right, y down)
    labels: [1, 0, ...]       one per point: 1 = object, 0 = background (default: all 1)
    box: [X0, Y0, X1, Y1]     a box
  add and refine need points or a box. Example prompts.yaml:
    - {frame: 0, object: 1, points: [[120, 80]]}
    - {time: 2.0, object: 2, box: [200, 40, 260, 120]}
    - {frame: 40, action: refine, object: 1, points: [[130, 90], [150, 60]], labels: [1, 0]}
    - {frame: 80, action: remove, object: 2}
"""
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_POINT = re.compile(rf"^({_NUMBER}),({_NUMBER})(?:,([01]))?(?:@(\d+))?$")
_BOX = re.compile(rf"^({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})(?:@(\d+))?$")
_FILE_KEYS = {"frame", "time", "object", "objects", "action", "points", "labels", "box"}


class PromptError(ValueError):
    """A prompt that cannot be used; the message names where it came from (option or file entry)."""


@dataclass(frozen=True)
class PromptEvent:
    """One change to one object, applied before a frame is tracked.

    Attributes:
      object_ids: the object (add / refine: exactly one id; remove: one or more).
      action: "add" (a new object, or more prompts for a known one), "refine" (a known object only) or
        "remove".
      points: (P, 2) float x, y in pixels of the input frame, or None.
      labels: (P,) int 1 = object, 0 = background, or None (with points: required).
      box: (4,) float x0, y0, x1, y1 in pixels, or None.
      origin: where the prompt was given, for messages ("--point 10,20@1", "p.yaml: prompt 3").
    """

    object_ids: Tuple[int, ...]
    action: str = "add"
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[np.ndarray] = None
    origin: str = ""


class PromptProvider(Protocol):
    """Anything that gives prompts frame by frame (command line, prompt file, a detector, ...)."""

    def events_for(self, frame: VideoFrame) -> List[PromptEvent]:
        """The events to apply before `frame` is tracked (called once per frame, in frame order)."""


class PromptSchedule:
    """Events at frame numbers or at timestamps (seconds since the first frame), applied once each.

    An event is due on the first frame with index >= its frame, or time_s >= its time.
    """

    def __init__(self) -> None:
        # (frame number or None, time in seconds or None, event), in the order given
        self._entries: List[Tuple[Optional[int], Optional[float], PromptEvent]] = []

    def at_frame(self, frame: int, event: PromptEvent) -> None:
        self._entries.append((frame, None, event))

    def at_time(self, seconds: float, event: PromptEvent) -> None:
        self._entries.append((None, seconds, event))

    def events_for(self, frame: VideoFrame) -> List[PromptEvent]:
        due = [
            (at_frame is not None and frame.index >= at_frame)
            or (at_time is not None and frame.time_s >= at_time - 1e-9)
            for at_frame, at_time, _ in self._entries
        ]
        events = [entry[2] for entry, is_due in zip(self._entries, due) if is_due]
        self._entries = [entry for entry, is_due in zip(self._entries, due) if not is_due]
        return events

    @property
    def events(self) -> List[PromptEvent]:
        """The events not applied yet."""
        return [event for _, _, event in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def validate(self, tracker: Tracker, frame_size: Tuple[int, int]) -> None:
        """Check every waiting add / refine prompt against an (H, W) frame before tracking starts (points and
        boxes inside the frame, valid labels), so a bad prompt fails at once rather than at its frame.

        Raises:
          PromptError: naming the prompt's origin and the tracker's reason.
        """
        for event in self.events:
            if event.action == "remove":
                continue
            try:
                tracker.prepare_prompt(frame_size, points=event.points, labels=event.labels, box=event.box)
            except TrackerInputError as error:
                raise PromptError(f"{event.origin}: {error}") from error


# --------------------------------------------------------------------------- command line


def parse_point(text: str) -> Tuple[float, float, int, int]:
    """``X,Y[,LABEL][@OBJ]`` -> (x, y, label, object id); label 1 and object 1 by default."""
    match = _POINT.match(text.replace(" ", ""))
    if match is None:
        raise PromptError(f"expected X,Y[,LABEL][@OBJ] (e.g. 120,80 or 120,80,0@2), got {text!r}")
    x, y, label, obj = match.groups()
    return float(x), float(y), int(label or 1), _object_id(obj)


def parse_box(text: str) -> Tuple[float, float, float, float, int]:
    """``X0,Y0,X1,Y1[@OBJ]`` -> (x0, y0, x1, y1, object id); object 1 by default."""
    match = _BOX.match(text.replace(" ", ""))
    if match is None:
        raise PromptError(f"expected X0,Y0,X1,Y1[@OBJ] (e.g. 10,20,110,90@2), got {text!r}")
    *coords, obj = match.groups()
    x0, y0, x1, y1 = (float(v) for v in coords)
    if not (x1 > x0 and y1 > y0):
        raise PromptError(f"a box needs X1 > X0 and Y1 > Y0 (top-left, then bottom-right), got {text!r}")
    return x0, y0, x1, y1, _object_id(obj)


def command_line_schedule(points: Sequence[str], boxes: Sequence[str]) -> PromptSchedule:
    """The --point / --box options as first-frame prompts, one per object id (ascending)."""
    by_object: Dict[int, Dict[str, Any]] = {}
    for text in points:
        x, y, label, obj = parse_point(text)
        entry = by_object.setdefault(obj, {"points": [], "labels": [], "origin": []})
        entry["points"].append((x, y))
        entry["labels"].append(label)
        entry["origin"].append(f"--point {text}")
    for text in boxes:
        *box, obj = parse_box(text)
        entry = by_object.setdefault(obj, {"points": [], "labels": [], "origin": []})
        if "box" in entry:
            raise PromptError(f"--box {text}: object {obj} already has a box (one box per object)")
        entry["box"] = box
        entry["origin"].append(f"--box {text}")
    schedule = PromptSchedule()
    for obj in sorted(by_object):
        entry = by_object[obj]
        schedule.at_frame(0, PromptEvent(
            object_ids=(obj,),
            points=np.array(entry["points"], dtype=np.float64) if entry["points"] else None,
            labels=np.array(entry["labels"], dtype=np.int64) if entry["labels"] else None,
            box=np.array(entry["box"], dtype=np.float64) if "box" in entry else None,
            origin=" ".join(entry["origin"]),
        ))
    return schedule


def _object_id(text: Optional[str]) -> int:
    obj = 1 if text is None else int(text)
    if not 1 <= obj <= MAX_OUTPUT_OBJECT_ID:
        raise PromptError(f"object ids are 1..{MAX_OUTPUT_OBJECT_ID}, got {obj}")
    return obj


# --------------------------------------------------------------------------- prompt files


def load_prompt_file(path: Path) -> PromptSchedule:
    """Read a prompt file (JSON, or YAML for .yaml / .yml; format in USER_GUIDE).

    Raises:
      PromptError: unreadable file, syntax error, or an invalid prompt (named by its position).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PromptError(f"cannot read the prompt file {path}: {error.strerror or error}") from error
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise PromptError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from error
    else:
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise PromptError(f"{path} is not valid JSON: {error}") from error
    if isinstance(content, Mapping) and set(content) == {"prompts"}:
        content = content["prompts"]
    if not isinstance(content, list):
        raise PromptError(
            f"{path}: expected a list of prompts (or {{\"prompts\": [...]}}), got {type(content).__name__}"
        )
    schedule = PromptSchedule()
    for number, item in enumerate(content, start=1):
        origin = f"{path}: prompt {number}"
        when, event = _file_event(item, origin)
        if isinstance(when, int):
            schedule.at_frame(when, event)
        else:
            schedule.at_time(when, event)
    return schedule


def _file_event(item: Any, origin: str) -> Tuple[Any, PromptEvent]:
    """(frame number or time in seconds, event) of one prompt-file entry."""
    if not isinstance(item, Mapping):
        raise PromptError(f"{origin}: expected a mapping with frame/time, object, points/box, got {item!r}")
    unknown = sorted(set(map(str, item)) - _FILE_KEYS)
    if unknown:
        raise PromptError(f"{origin}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_FILE_KEYS))}")
    if ("frame" in item) == ("time" in item):
        raise PromptError(f"{origin}: give exactly one of 'frame' (a number) or 'time' (seconds)")
    if "frame" in item:
        when = item["frame"]
        if isinstance(when, bool) or not isinstance(when, int) or when < 0:
            raise PromptError(f"{origin}: 'frame' must be a whole number >= 0, got {when!r}")
    else:
        when = item["time"]
        if isinstance(when, bool) or not isinstance(when, (int, float)) or not 0 <= when < float("inf"):
            raise PromptError(f"{origin}: 'time' must be seconds >= 0, got {when!r}")
        when = float(when)
    action = item.get("action", "add")
    if action not in ACTIONS:
        raise PromptError(f"{origin}: 'action' must be one of {', '.join(ACTIONS)}, got {action!r}")
    ids = _file_object_ids(item, action, origin)
    if action == "remove":
        if any(key in item for key in ("points", "labels", "box")):
            raise PromptError(f"{origin}: a remove takes no points, labels or box")
        return when, PromptEvent(object_ids=ids, action=action, origin=origin)
    points = _array(item.get("points"), (-1, 2), "points", origin)
    box = _array(item.get("box"), (4,), "box", origin)
    if points is None and box is None:
        raise PromptError(f"{origin}: an {action} needs 'points' or a 'box'")
    labels = None
    if points is not None:
        labels = _array(item.get("labels", [1] * len(points)), (len(points),), "labels", origin)
        if not np.isin(labels, (0, 1)).all():
            raise PromptError(f"{origin}: 'labels' must be 1 (object) or 0 (background), got {labels.tolist()}")
        labels = labels.astype(np.int64)
    elif "labels" in item:
        raise PromptError(f"{origin}: 'labels' without 'points'")
    if box is not None and not (box[2] > box[0] and box[3] > box[1]):
        raise PromptError(f"{origin}: 'box' needs X1 > X0 and Y1 > Y0, got {box.tolist()}")
    return when, PromptEvent(object_ids=ids, action=action, points=points, labels=labels, box=box, origin=origin)


def _file_object_ids(item: Mapping, action: str, origin: str) -> Tuple[int, ...]:
    if "object" in item and "objects" in item:
        raise PromptError(f"{origin}: give 'object' or 'objects', not both")
    if "objects" in item:
        if action != "remove":
            raise PromptError(f"{origin}: 'objects' (several ids) is for remove; an {action} takes one 'object'")
        values = item["objects"]
        values = values if isinstance(values, list) else [values]
    elif "object" in item:
        values = [item["object"]]
    else:
        raise PromptError(f"{origin}: missing 'object' (the object id)")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_OBJECT_ID:
            raise PromptError(f"{origin}: object ids are whole numbers 1..{MAX_OUTPUT_OBJECT_ID}, got {value!r}")
    if not values:
        raise PromptError(f"{origin}: 'objects' is empty")
    return tuple(values)


def _array(value: Any, shape: Tuple[int, ...], name: str, origin: str) -> Optional[np.ndarray]:
    """A list of numbers of the given shape (-1: any length >= 1) as float64, or None when absent."""
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{origin}: '{name}' must be numbers, got {value!r}") from None
    fits = array.ndim == len(shape) and all(want in (-1, got) for want, got in zip(shape, array.shape))
    if not fits or array.size == 0 or not np.isfinite(array).all():
        expected = {"points": "[[X, Y], ...]", "box": "[X0, Y0, X1, Y1]", "labels": f"{shape[0]} labels, one per point"}
        raise PromptError(f"{origin}: '{name}' must be {expected[name]}, got {value!r}")
    return array


# --------------------------------------------------------------------------- applying


def apply_events(
    tracker: Tracker, state: StreamState, events: Sequence[PromptEvent], frame_size: Tuple[int, int]
) -> None:
    """Hand a frame's events to the tracker, in order (before the frame is stepped).

    Raises:
      PromptError: refining or removing an object the stream does not track, too many objects, or a prompt
        the tracker refuses (the message names the prompt's origin).
    """
    for event in events:
        try:
            if event.action == "remove":
                tracker.remove_objects(state, list(event.object_ids))
                continue
            (obj,) = event.object_ids
            if event.action == "refine" and obj not in state.object_ids:
                raise TrackerInputError(f"cannot refine object {obj}: it is not tracked (tracked: {state.object_ids})")
            tracker.add_prompt(state, obj, points=event.points, labels=event.labels, box=event.box,
                               frame_size=frame_size)
        except TrackerInputError as error:
            raise PromptError(f"{event.origin}: {error}") from error

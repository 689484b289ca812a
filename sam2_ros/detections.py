"""Detector boxes in the node: messages -> `sam2_rt.detection.decisions.Detection`, matched to camera frames by stamp.

Two inputs per camera, both always subscribed: `detection_boxes` (sam2_ros/DetectionArray, our own message,
what CI drives) and `detections_in` (vision_msgs/Detection2DArray, where vision_msgs is importable: every ROS
install has it, PyPI does not). The association policy itself is `sam2_rt.detection.association` (README, "Detector-driven
tracking").

Matching by stamp: a detection array carries the stamp of the image the detector saw. When the worker tracks
a camera frame with stamp S, it takes the waiting arrays stamped at or before S: one stamped S is on time;
older ones are late (their frame was processed, or dropped, before they came): the newest of them applies to
this frame and all are counted as late. Arrays stamped after S wait for their frame. At most
MAX_PENDING_DETECTIONS arrays wait per camera; older ones are dropped and counted.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from sam2_ros.msg import DetectionArray
from sam2_rt.detection.decisions import Detection

# Detection arrays waiting for their camera frame, per camera (a detector far ahead of the tracker, or stamps
# that never match, cannot grow memory).
MAX_PENDING_DETECTIONS = 16


def stamp_ns(stamp: Any) -> int:
    """Nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def detections_from_array(msg: DetectionArray) -> List[Detection]:
    """Our DetectionArray as policy detections (empty label / track id = none). Values are checked by the policy."""
    return [
        Detection(box=tuple(float(v) for v in d.box), score=float(d.score), label=d.label or None,
                  track_id=d.track_id or None)
        for d in msg.detections
    ]


def detections_from_vision(msg: Any) -> List[Detection]:
    """vision_msgs/Detection2DArray as policy detections.

    Box from bbox centre and size; label and score from the best-scoring hypothesis (class_id; score 1 and no
    label without hypotheses); track id from Detection2D.id (empty = none).
    """
    detections = []
    for detection in msg.detections:
        box = detection.bbox
        cx, cy = float(box.center.position.x), float(box.center.position.y)
        half_w, half_h = float(box.size_x) / 2.0, float(box.size_y) / 2.0
        label, score = None, 1.0
        if detection.results:
            best = max(detection.results, key=lambda result: result.hypothesis.score)
            label, score = best.hypothesis.class_id or None, float(best.hypothesis.score)
        detections.append(Detection(box=(cx - half_w, cy - half_h, cx + half_w, cy + half_h), score=score,
                                    label=label, track_id=detection.id or None))
    return detections


@dataclass(frozen=True)
class FrameDetections:
    """What applies to one camera frame: the detections (None: no detector array for it) and counts."""

    detections: Optional[List[Detection]]
    late: int  # arrays stamped before the frame, consumed now


class PendingDetections:
    """Detection arrays of one camera waiting for their frame (thread-safe; callbacks put, the worker takes)."""

    def __init__(self, limit: int = MAX_PENDING_DETECTIONS) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._items: List[Tuple[int, List[Detection]]] = []

    def put(self, stamp: int, detections: List[Detection]) -> bool:
        """Queue an array; returns True when the oldest waiting array had to be dropped to make room."""
        with self._lock:
            self._items.append((stamp, detections))
            self._items.sort(key=lambda item: item[0])
            if len(self._items) > self._limit:
                self._items.pop(0)
                return True
            return False

    def take_for(self, frame_stamp: int) -> FrameDetections:
        """Consume the arrays stamped at or before `frame_stamp`; see the module docstring."""
        with self._lock:
            due = [item for item in self._items if item[0] <= frame_stamp]
            self._items = [item for item in self._items if item[0] > frame_stamp]
        if not due:
            return FrameDetections(None, 0)
        late = sum(stamp < frame_stamp for stamp, _ in due)
        return FrameDetections(due[-1][1], late)


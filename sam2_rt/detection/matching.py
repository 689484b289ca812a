"""Box geometry and one-to-one assignment for the detection-association policy: pure functions, no state.

Boxes are (x0, y0, x1, y1) in pixels of the original frame, x1 and y1 exclusive.
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Set, Tuple

Box = Tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the original frame (x1, y1 exclusive)


def checked_box(value: Sequence[float]) -> Tuple[Box, str]:
    """(box, "") for four finite numbers, else ((nan,) * 4, what is wrong)."""
    invalid: Box = (math.nan, math.nan, math.nan, math.nan)
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return invalid, f"box {value!r} is not a sequence of numbers"
    if len(numbers) != 4:
        return invalid, f"box must be (x0, y0, x1, y1), got {len(numbers)} numbers"
    if not all(math.isfinite(v) for v in numbers):
        return invalid, f"box {numbers} is not finite"
    return as_box(numbers), ""


def as_box(values: Sequence[float]) -> Box:
    """The first four values as a box of floats."""
    return float(values[0]), float(values[1]), float(values[2]), float(values[3])


def box_area(box: Box) -> float:
    """Area of a box; 0 when x1 <= x0 or y1 <= y0."""
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 when either has no area."""
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def box_center_distance(box: Box, reference: Box) -> float:
    """Distance between the centres of `box` and `reference`, in units of `reference`'s diagonal."""
    dx = (box[0] + box[2] - reference[0] - reference[2]) / 2.0
    dy = (box[1] + box[3] - reference[1] - reference[3]) / 2.0
    diagonal = math.hypot(reference[2] - reference[0], reference[3] - reference[1])
    return math.hypot(dx, dy) / diagonal if diagonal > 0 else math.inf


def greedy_assignment(pairs: List[tuple]) -> List[Tuple[float, Any, Any]]:
    """One-to-one assignment from (key, detection index, object id, detection, object) tuples, lowest key
    first, ties by detection index then object id; returns the chosen (key, detection, object)."""
    used_detections: Set[int] = set()
    used_objects: Set[int] = set()
    chosen = []
    for key, index, object_id, candidate, view in sorted(pairs, key=lambda p: p[:3]):
        if index not in used_detections and object_id not in used_objects:
            used_detections.add(index)
            used_objects.add(object_id)
            chosen.append((key, candidate, view))
    return chosen

"""The overlay image: the input frame with each object's mask tinted in its colour, its box and its id.

This is what an AR view or RViz shows. Colours are a fixed function of the object id, so an object keeps
its colour across frames, nodes and recordings.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from sam2_ros.msg import TrackedObject
from sam2_ros.outputs import FrameOutputs

_STATE_NAMES = {TrackedObject.STATE_TRACKING: "tracking", TrackedObject.STATE_OCCLUDED: "occluded",
                TrackedObject.STATE_LOST: "lost"}
# Hue step of consecutive ids: the golden ratio spreads any number of ids evenly around the hue circle.
_HUE_STEP = 0.6180339887498949
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def object_colour(object_id: int) -> tuple[int, int, int]:
    """The BGR colour (uint8 values) of an object id."""
    red, green, blue = colorsys.hsv_to_rgb((object_id * _HUE_STEP) % 1.0, 0.85, 1.0)
    return int(blue * 255), int(green * 255), int(red * 255)


def draw_overlay(rgb: np.ndarray, outputs: FrameOutputs, alpha: float = 0.5) -> np.ndarray:
    """Draw the tracking result over its frame.

    Arguments:
      rgb: (H, W, 3) uint8 RGB input frame (not modified).
      outputs: the frame's result, at most 255 objects; ``outputs.labels`` must be (H, W).
      alpha: opacity of the mask tint, 0 (invisible) .. 1 (opaque).
    Returns:
      (H, W, 3) uint8 BGR image: masks tinted, for each visible object its box and "id score" label, and
      in the top-left corner a legend line per object: id, state, presence.
    """
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if outputs.object_ids.size == 0:
        return bgr
    # Object id -> row k + 1 of the colour table (0 = background), then the table via cv2.LUT: a pass or two
    # over the image whatever the number of objects (fancy indexing with the ids would be ~10x slower).
    row_of_id = np.zeros(int(outputs.object_ids.max()) + 1, dtype=np.uint8)
    row_of_id[outputs.object_ids] = np.arange(1, outputs.object_ids.size + 1)
    colour_table = np.zeros((256, 1, 3), dtype=np.uint8)
    for row, obj_id in enumerate(outputs.object_ids, start=1):
        colour_table[row, 0] = object_colour(int(obj_id))
    rows = np.take(row_of_id, outputs.labels)
    tint = cv2.LUT(cv2.cvtColor(rows, cv2.COLOR_GRAY2BGR), colour_table)
    blended = cv2.addWeighted(bgr, 1.0 - alpha, tint, alpha, 0.0)
    cv2.copyTo(blended, rows, bgr)  # where rows != 0
    for obj_id, box, score, area in zip(outputs.object_ids, outputs.boxes, outputs.scores, outputs.areas):
        if area == 0:
            continue
        colour = object_colour(int(obj_id))
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        cv2.rectangle(bgr, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, 2)
        text = f"{int(obj_id)} {float(score):.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, 0.5, 1)
        top = max(0, y0 - text_h - baseline - 2)
        cv2.rectangle(bgr, (x0, top), (x0 + text_w + 4, top + text_h + baseline + 2), colour, cv2.FILLED)
        cv2.putText(bgr, text, (x0 + 2, top + text_h + 1), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for row, (obj_id, state, presence) in enumerate(zip(outputs.object_ids, outputs.states, outputs.presence)):
        text = f"{int(obj_id)} {_STATE_NAMES.get(int(state), str(int(state)))} {float(presence):.2f}"
        origin = (6, 18 + 18 * row)
        cv2.putText(bgr, text, origin, _FONT, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(bgr, text, origin, _FONT, 0.5, object_colour(int(obj_id)), 1, cv2.LINE_AA)
    return bgr

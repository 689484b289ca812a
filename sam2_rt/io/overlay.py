"""The overlay image: what an AR view, RViz or a recorded video shows of a tracking result.

Each object's mask is tinted in its colour and outlined, its box drawn with an "id score" tag, and a legend
in the top-left corner lists every object (colour, id, state, presence) in light text on a dark panel. An
optional banner across the bottom carries a warning such as "RANDOM WEIGHTS - masks are meaningless".
Colours are a fixed function of the object id, so an object keeps its colour across frames, nodes and
recordings. numpy + OpenCV only (used by `sam2-rt track --output` and by the node's `overlay` topic).
"""
from __future__ import annotations

import colorsys
from typing import List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from sam2_rt.io.frame_outputs import FrameOutputs

Colour = Tuple[int, int, int]

# Hue step of consecutive ids: the golden ratio spreads any number of ids evenly around the hue circle.
_HUE_STEP = 0.6180339887498949
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Objects one overlay can colour (the colour table is indexed by uint8 rows; row 0 is the background).
MAX_OVERLAY_OBJECTS = 255
_LIGHT: Colour = (240, 240, 240)
_DARK: Colour = (20, 20, 20)
_PANEL_OPACITY = 0.7
_BANNER_COLOUR: Colour = (0, 0, 170)  # BGR dark red
# OpenCV's Hershey fonts draw ASCII only: the few non-ASCII characters a warning is likely to hold.
_ASCII_FOR = {"\u2014": "-", "\u2013": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


class _TextStyle(NamedTuple):
    """Font scale, stroke thickness and padding (pixels) for a frame size."""

    scale: float
    thickness: int
    pad: int

    @classmethod
    def for_frame(cls, height: int, width: int) -> "_TextStyle":
        # 0.45 at 360 px (capitals about 10 px high), growing with the frame, never below 0.35 (still legible
        # on a 96 px frame).
        scale = max(0.35, 0.45 * min(height, width) / 360.0)
        return cls(scale, 1 if scale < 0.9 else 2, max(2, int(round(4 * scale))))

    def size(self, text: str) -> Tuple[int, int, int]:
        """(width, height above the baseline, baseline) of text in pixels."""
        (width, height), baseline = cv2.getTextSize(text, _FONT, self.scale, self.thickness)
        return width, height, baseline


def object_colour(object_id: int) -> Colour:
    """The BGR colour (uint8 values) of an object id."""
    red, green, blue = colorsys.hsv_to_rgb((object_id * _HUE_STEP) % 1.0, 0.85, 1.0)
    return int(blue * 255), int(green * 255), int(red * 255)


def _text_colour_on(background: Colour) -> Colour:
    """Dark text on light backgrounds, light text on dark ones (ITU-R BT.601 luma of a BGR colour)."""
    blue, green, red = background
    return _DARK if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else _LIGHT


def _ascii(text: str) -> str:
    return "".join(_ASCII_FOR.get(char, char) for char in text).encode("ascii", "replace").decode("ascii")


def _put_text(bgr: np.ndarray, text: str, origin: Tuple[int, int], colour: Colour, style: _TextStyle) -> None:
    cv2.putText(bgr, text, origin, _FONT, style.scale, colour, style.thickness, cv2.LINE_AA)


def _darken(bgr: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    """Blend a dark panel over bgr[y0:y1, x0:x1] (in place), so light text on it reads on any frame."""
    region = bgr[max(0, y0) : y1, max(0, x0) : x1]
    region[:] = cv2.addWeighted(region, 1.0 - _PANEL_OPACITY, np.full_like(region, _DARK), _PANEL_OPACITY, 0.0)


def draw_overlay(
    rgb: np.ndarray, outputs: FrameOutputs, alpha: float = 0.5, banner: Optional[str] = None
) -> np.ndarray:
    """Draw the tracking result over its frame.

    Arguments:
      rgb: (H, W, 3) uint8 RGB input frame (not modified).
      outputs: the frame's result, at most MAX_OVERLAY_OBJECTS objects; ``outputs.labels`` must be (H, W).
      alpha: opacity of the mask tint, 0 (invisible) .. 1 (opaque); outlines are always opaque.
      banner: a warning drawn across the bottom of the image (see `draw_banner`), or None.
    Returns:
      (H, W, 3) uint8 BGR image: masks tinted and outlined; for each visible object its box and an
      "id score" tag (score = predicted IoU); a legend panel per object: colour, id, state, presence.
    Raises:
      ValueError: more than MAX_OVERLAY_OBJECTS objects, or labels of another size than the frame.
    """
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if outputs.object_ids.size > MAX_OVERLAY_OBJECTS:
        raise ValueError(f"the overlay draws at most {MAX_OVERLAY_OBJECTS} objects, got {outputs.object_ids.size}")
    if outputs.labels.shape != bgr.shape[:2]:
        raise ValueError(f"labels of shape {outputs.labels.shape} do not fit the frame {bgr.shape[:2]}")
    style = _TextStyle.for_frame(*bgr.shape[:2])
    if outputs.object_ids.size:
        _draw_masks(bgr, outputs, alpha, style)
        _draw_boxes(bgr, outputs, style)
        _draw_legend(bgr, outputs, style)
    if banner:
        draw_banner(bgr, banner)
    return bgr


def _draw_masks(bgr: np.ndarray, outputs: FrameOutputs, alpha: float, style: _TextStyle) -> None:
    """Tint every mask and outline it, in its object's colour (in place)."""
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
    # Outline: pixels whose neighbourhood holds another label (background or another object), coloured
    # like the highest row around them; about style.thickness + 1 pixels wide on each side of an edge.
    kernel = np.ones((2 * style.thickness + 1, 2 * style.thickness + 1), dtype=np.uint8)
    edges = cv2.morphologyEx(rows, cv2.MORPH_GRADIENT, kernel)
    outline = cv2.LUT(cv2.cvtColor(cv2.dilate(rows, kernel), cv2.COLOR_GRAY2BGR), colour_table)
    cv2.copyTo(outline, edges, bgr)


def _draw_boxes(bgr: np.ndarray, outputs: FrameOutputs, style: _TextStyle) -> None:
    """Box and "id score" tag of every object with a non-empty mask (in place)."""
    for obj in outputs.objects:
        if obj.mask_area == 0:
            continue
        colour = object_colour(obj.object_id)
        x0, y0, x1, y1 = (int(round(v)) for v in obj.box)
        cv2.rectangle(bgr, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, style.thickness)
        text = f"{obj.object_id} {obj.score:.2f}"
        text_w, text_h, baseline = style.size(text)
        tag_h = text_h + baseline + 2 * style.pad
        top = y0 - tag_h if y0 >= tag_h else y0  # above the box, or inside it at the top edge
        cv2.rectangle(bgr, (x0, top), (x0 + text_w + 2 * style.pad, top + tag_h), colour, cv2.FILLED)
        _put_text(bgr, text, (x0 + style.pad, top + style.pad + text_h), _text_colour_on(colour), style)


def _draw_legend(bgr: np.ndarray, outputs: FrameOutputs, style: _TextStyle) -> None:
    """A dark panel in the top-left corner with one line per object: colour swatch, id, state, presence."""
    lines: List[Tuple[int, str]] = [
        (obj.object_id, f"{obj.object_id} {obj.state.name.lower()} {obj.presence:.2f}") for obj in outputs.objects
    ]
    _, text_h, baseline = style.size("0")
    line_h = text_h + baseline + style.pad
    fitting = max(1, (bgr.shape[0] // 2 - style.pad) // line_h)  # the legend takes at most half the height
    if len(lines) > fitting:
        lines = lines[: fitting - 1] + [(0, f"+{len(lines) - fitting + 1} more")]
    swatch = text_h
    text_x = style.pad * 2 + swatch
    width = text_x + max(style.size(text)[0] for _, text in lines) + style.pad
    _darken(bgr, 0, 0, width, style.pad + line_h * len(lines))
    for row, (obj_id, text) in enumerate(lines):
        top = style.pad + row * line_h
        if obj_id:
            cv2.rectangle(bgr, (style.pad, top), (style.pad + swatch, top + swatch), object_colour(obj_id), cv2.FILLED)
        _put_text(bgr, text, (text_x, top + text_h), _LIGHT, style)


def draw_banner(bgr: np.ndarray, text: str) -> None:
    """Draw an opaque band with `text` in light letters across the bottom of a BGR image (in place).

    Drawing the same banner twice gives the same image. Non-ASCII characters are replaced (OpenCV's fonts
    are ASCII only); the text shrinks to fit the width.
    """
    height, width = bgr.shape[:2]
    style = _TextStyle.for_frame(height, width)
    text = _ascii(text)
    text_w, text_h, baseline = style.size(text)
    # Text width is not proportional to the scale at small sizes (strokes keep their width): shrink in steps.
    while text_w > width - 2 * style.pad and style.scale > 0.1:
        style = style._replace(scale=style.scale * 0.95 * (width - 2 * style.pad) / text_w)
        text_w, text_h, baseline = style.size(text)
    band_h = text_h + baseline + 2 * style.pad
    cv2.rectangle(bgr, (0, height - band_h), (width - 1, height - 1), _BANNER_COLOUR, cv2.FILLED)
    _put_text(bgr, text, ((width - text_w) // 2, height - style.pad - baseline), _LIGHT, style)

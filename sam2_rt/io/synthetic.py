"""Synthetic clips: coloured shapes moving over a textured background, with their ground truth.

One generator for the `sam2-rt bench` command, the benchmarks and the tests (numpy only: the GPU machine has
no OpenCV). A `SyntheticClip` is defined by its size, number of shapes and seed; any frame is computed on
demand from its index, so a clip is endless (ROS camera streams) as well as stackable (`frames`):

    clip = SyntheticClip(480, 640, num_shapes=3, seed=1)
    frames = clip.frames(60)                   # (60, 480, 640, 3) uint8 RGB
    clicks = clip.centers(0)                   # (3, 2) x, y of each shape on frame 0: a click on each

Shapes cycle through disc, square, ellipse and triangle. They start at the centres of a near-square grid
of cells (one shape per cell, inside it), move in straight lines at a few pixels per frame and bounce off
the frame's borders (they stay whole inside the frame), so they overlap at times; a later shape is drawn
over an earlier one.
"""

from __future__ import annotations

import math
from typing import Iterator, Tuple

import numpy as np

SHAPES = ("disc", "square", "ellipse", "triangle")
# Colours of the first four shapes (RGB); further ones are drawn from the seed.
COLOURS = ((230, 40, 40), (40, 200, 60), (50, 80, 230), (240, 220, 30))
# Side of the cells of the background's random texture, in pixels.
TEXTURE_CELL = 16
# Ellipses are this much flatter than wide.
ELLIPSE_ASPECT = 0.6


class SyntheticClip:
    """An endless synthetic clip; frames and ground truth are computed from the frame index.

    Arguments:
      height, width: frame size in pixels.
      num_shapes: how many shapes move over the background (>= 1).
      seed: seed of the texture, shape sizes, velocities and colours beyond the first four.
    """

    def __init__(self, height: int, width: int, num_shapes: int = 4, seed: int = 0) -> None:
        if height < 1 or width < 1 or num_shapes < 1:
            raise ValueError(f"need a frame of at least 1x1 and a shape, got {height}x{width}, {num_shapes} shapes")
        self.height, self.width, self.num_shapes, self.seed = int(height), int(width), int(num_shapes), seed
        rng = np.random.default_rng(seed)
        self.background = _background(self.height, self.width, rng)
        columns = math.ceil(math.sqrt(num_shapes))
        rows = math.ceil(num_shapes / columns)
        cell_w, cell_h = self.width / columns, self.height / rows
        index = np.arange(num_shapes)
        self._start = np.stack([(index % columns + 0.5) * cell_w, (index // columns + 0.5) * cell_h], axis=1)
        self.kinds = tuple(SHAPES[k % len(SHAPES)] for k in range(num_shapes))
        radius = rng.uniform(0.2, 0.3, size=num_shapes) * min(cell_w, cell_h, 0.5 * min(self.height, self.width))
        flat = np.array([ELLIPSE_ASPECT if kind == "ellipse" else 1.0 for kind in self.kinds])
        self._half = np.stack([radius, radius * flat], axis=1)  # half extents (x, y) of each shape
        self._velocity = rng.uniform(-1.0, 1.0, size=(num_shapes, 2)) * min(self.height, self.width) / 80.0
        extra = rng.uniform(40, 255, size=(max(num_shapes - len(COLOURS), 0), 3)).round()
        fixed = np.array(COLOURS[:num_shapes], dtype=np.float64).reshape(-1, 3)
        self.colours = np.concatenate([fixed, extra]).astype(np.uint8)  # (K, 3) RGB

    def centers(self, index: int) -> np.ndarray:
        """(K, 2) float x, y of each shape's centre on frame `index` (pixels)."""
        low = self._half  # the shape stays whole inside the frame (pinned if it cannot move)
        high = np.maximum(np.array([self.width - 1.0, self.height - 1.0]) - self._half, low)
        span = high - low
        travelled = self._start - low + self._velocity * index
        folded = np.mod(travelled, 2 * np.where(span > 0, span, 1.0))
        bounced = np.where(folded <= span, folded, 2 * span - folded)
        return low + np.where(span > 0, bounced, self._start - low)

    def boxes(self, index: int) -> np.ndarray:
        """(K, 4) float x0, y0, x1, y1 of each whole shape on frame `index` (pixels, inside the frame)."""
        centers = self.centers(index)
        boxes = np.concatenate([centers - self._half, centers + self._half], axis=1)
        return np.clip(boxes, 0.0, [self.width - 1, self.height - 1, self.width - 1, self.height - 1])

    def masks(self, index: int) -> np.ndarray:
        """(K, H, W) bool: the pixels of each shape visible on frame `index` (later shapes cover earlier ones)."""
        labels = np.zeros((self.height, self.width), dtype=np.int32)
        for k, (rows, cols, inside) in enumerate(self._footprints(index)):
            labels[rows, cols][inside] = k + 1
        return labels[None] == np.arange(1, self.num_shapes + 1)[:, None, None]

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` (any index >= 0), (H, W, 3) uint8 RGB."""
        frame = self.background.copy()
        for colour, (rows, cols, inside) in zip(self.colours, self._footprints(index)):
            frame[rows, cols][inside] = colour
        return frame

    def frames(self, count: int, start: int = 0) -> np.ndarray:
        """Frames start .. start + count - 1 stacked, (T, H, W, 3) uint8 RGB."""
        return np.stack([self.frame(index) for index in range(start, start + count)])

    def _footprints(self, index: int) -> Iterator[Tuple[slice, slice, np.ndarray]]:
        """Per shape: the rows and columns of its box and the bool mask of its pixels within them."""
        for kind, (cx, cy), (hx, hy) in zip(self.kinds, self.centers(index), self._half):
            y0, y1 = max(int(math.floor(cy - hy)), 0), min(int(math.ceil(cy + hy)) + 1, self.height)
            x0, x1 = max(int(math.floor(cx - hx)), 0), min(int(math.ceil(cx + hx)) + 1, self.width)
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
            dx, dy = xs - cx, ys - cy
            if kind == "square":
                inside = (np.abs(dx) <= hx) & (np.abs(dy) <= hy)
            elif kind == "triangle":  # apex up: half width 0 at the top, hx at the bottom
                inside = (np.abs(dy) <= hy) & (np.abs(dx) <= (dy + hy) * hx / (2 * hy))
            else:  # disc, ellipse
                inside = (dx / hx) ** 2 + (dy / hy) ** 2 <= 1.0
            yield slice(y0, y1), slice(x0, x1), inside


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random texture (bilinear from TEXTURE_CELL-pixel cells) with diagonal stripes, uint8 RGB."""
    coarse = rng.uniform(0, 255, size=(height // TEXTURE_CELL + 2, width // TEXTURE_CELL + 2, 3))
    y = np.arange(height) / TEXTURE_CELL
    y0, fy = y.astype(int), (y - y.astype(int))[:, None, None]
    rows = coarse[y0] * (1 - fy) + coarse[y0 + 1] * fy
    x = np.arange(width) / TEXTURE_CELL
    x0, fx = x.astype(int), (x - x.astype(int))[None, :, None]
    texture = rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx
    ys, xs = np.mgrid[0:height, 0:width]
    stripes = 30.0 * np.sin((xs + 0.5 * ys) / 7.0)[..., None]
    return np.clip(0.6 * texture + 60 + stripes, 0, 255).astype(np.uint8)

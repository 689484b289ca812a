"""The synthetic clip (sam2_rt.io.synthetic): frames on demand, ground truth that matches the pixels, numpy only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sam2_rt.io.synthetic import SyntheticClip


def test_frames_are_computed_from_the_index_alone() -> None:
    clip = SyntheticClip(48, 64, num_shapes=3, seed=5)
    stacked = clip.frames(4, start=1000)
    assert stacked.shape == (4, 48, 64, 3) and stacked.dtype == np.uint8
    assert np.array_equal(stacked[2], SyntheticClip(48, 64, num_shapes=3, seed=5).frame(1002))
    assert not np.array_equal(clip.frame(0), clip.frame(10))  # the shapes move
    assert not np.array_equal(clip.frame(0), SyntheticClip(48, 64, num_shapes=3, seed=6).frame(0))


@pytest.mark.parametrize("height, width, num_shapes", [(24, 32, 4), (144, 192, 4), (64, 64, 9), (480, 640, 1)])
def test_shapes_stay_whole_inside_the_frame_and_move_a_few_pixels_per_frame(height, width, num_shapes) -> None:
    clip = SyntheticClip(height, width, num_shapes=num_shapes, seed=1)
    centers = np.stack([clip.centers(i) for i in range(3000)])
    boxes = np.stack([clip.boxes(i) for i in range(3000)])
    assert centers.shape == (3000, num_shapes, 2) and boxes.shape == (3000, num_shapes, 4)
    assert boxes[..., :2].min() >= 0 and (boxes[..., 2] <= width - 1).all() and (boxes[..., 3] <= height - 1).all()
    assert np.allclose((boxes[..., :2] + boxes[..., 2:]) / 2, centers)  # not clipped: whole inside
    steps = np.abs(np.diff(centers, axis=0)).max()
    assert 0 < steps <= min(height, width) / 80.0 + 1e-9  # bounces, never jumps
    assert np.ptp(centers[:, :, 0], axis=0).min() > 0  # every shape moves


def test_ground_truth_matches_the_pixels() -> None:
    clip = SyntheticClip(144, 192, num_shapes=4, seed=1)
    for index in (0, 37):
        frame, masks = clip.frame(index), clip.masks(index)
        assert masks.shape == (4, 144, 192) and masks.sum(axis=0).max() == 1  # one shape per pixel at most
        for k in range(4):
            assert masks[k].any() and (frame[masks[k]] == clip.colours[k]).all()
            ys, xs = np.nonzero(masks[k])
            x0, y0, x1, y1 = clip.boxes(index)[k]
            assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1
    # frame 0: shapes apart, each centre on its own shape (where a click goes)
    masks = clip.masks(0)
    for k, (x, y) in enumerate(clip.centers(0)):
        assert masks[k, int(round(y)), int(round(x))]


def test_it_needs_only_numpy() -> None:
    """The GPU machine has no OpenCV."""
    code = "import sys; import sam2_rt.io.synthetic; sys.exit('cv2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""The overlay drawing (sam2_rt.io.overlay, shared by `sam2-rt track --output` and the node's `overlay` topic):
tinted and outlined masks, boxes with id tags, a readable legend, an optional banner; and the host copy of a
result it draws from (FrameOutputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_rt.io.frame_outputs import FrameOutputs, box_to_roi
from sam2_rt.io.overlay import draw_banner, draw_overlay, object_colour
from sam2_rt import ObjectState, TrackResult
from sam2_rt.tracking.transforms import boxes_from_masks

HEIGHT, WIDTH = 120, 160
GREY = 200


def result(ids=(3, 8), states=(ObjectState.TRACKING, ObjectState.OCCLUDED)) -> TrackResult:
    """Object 3: rows 60-99, columns 20-59; object 8: rows 70-109, columns 100-139 (H x W = 120 x 160)."""
    masks = torch.zeros(len(ids), HEIGHT, WIDTH, dtype=torch.bool)
    masks[0, 60:100, 20:60] = True
    if len(ids) > 1:
        masks[1, 70:110, 100:140] = True
    return TrackResult(
        frame_index=0, object_ids=list(ids), masks=masks, logits=masks.float() * 4 - 2,
        low_res_logits=torch.zeros(len(ids), 1, 4, 4), ious=torch.tensor([0.91, 0.52][: len(ids)]),
        presence=torch.tensor([0.98, 0.3][: len(ids)]), states=list(states)[: len(ids)], boxes=boxes_from_masks(masks),
    )


def grey_frame() -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), GREY, dtype=np.uint8)


def test_frame_outputs_are_sorted_by_id_with_areas_boxes_and_uint16_labels() -> None:
    outputs = FrameOutputs.from_result(result(ids=(8, 3)))
    assert outputs.object_ids.tolist() == [3, 8]
    assert outputs.areas.tolist() == [40 * 40, 40 * 40]
    assert outputs.labels.dtype == np.uint16 and outputs.labels[80, 120] == 3 and outputs.labels[65, 30] == 8
    np.testing.assert_allclose(outputs.boxes[1], [20, 60, 60, 100])  # the mask of row 0 (id 8), now second
    assert outputs.scores.tolist() == pytest.approx([0.52, 0.91])
    assert box_to_roi(outputs.boxes[1]) == (20, 60, 40, 40)


def test_ids_that_do_not_fit_a_uint16_label_image_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit a uint16 label image"):
        FrameOutputs.from_result(result(ids=(70000,), states=(ObjectState.TRACKING,)))


def test_masks_are_tinted_inside_and_outlined_in_their_colour() -> None:
    outputs = FrameOutputs.from_result(result())
    opaque = draw_overlay(grey_frame(), outputs, alpha=1.0)
    assert tuple(opaque[80, 40]) == object_colour(3)  # inside object 3
    assert tuple(opaque[5, 150]) == (GREY, GREY, GREY)  # background, away from legend and boxes
    invisible_tint = draw_overlay(grey_frame(), outputs, alpha=0.0)
    assert tuple(invisible_tint[80, 40]) == (GREY, GREY, GREY)  # alpha 0: no tint inside ...
    assert tuple(invisible_tint[80, 60]) == object_colour(3)  # ... but the outline on its right edge stays
    assert tuple(invisible_tint[90, 99]) == object_colour(8)  # and on the left edge of object 8


def test_boxes_and_tags_are_drawn_only_for_visible_objects() -> None:
    outputs = FrameOutputs.from_result(result())
    hidden = FrameOutputs(**{**outputs.__dict__, "areas": np.array([0, 1600])})
    with_box = draw_overlay(grey_frame(), outputs, alpha=0.0)
    without_box = draw_overlay(grey_frame(), hidden, alpha=0.0)
    tag_region = (slice(45, 59), slice(20, 50))  # the "3 0.91" tag above object 3's box
    assert (with_box[tag_region] == object_colour(3)).all(axis=2).mean() > 0.3
    assert not (without_box[tag_region] == object_colour(3)).all(axis=2).any()


def test_legend_is_light_text_on_a_dark_panel_without_dark_glyph_outlines() -> None:
    bgr = draw_overlay(grey_frame(), FrameOutputs.from_result(result()), alpha=0.5).astype(int)
    panel_level = round(GREY * 0.3 + 20 * 0.7)  # the grey frame under the 70 % dark panel
    rows, cols = np.nonzero((bgr == panel_level).all(axis=2))
    assert rows.min() == 0 and cols.min() == 0  # the panel sits in the top-left corner
    panel = bgr[: rows.max() + 1, : cols.max() + 1]
    assert panel.shape[0] >= 16 and panel.shape[1] >= 40  # two lines of legend
    swatches = np.zeros(panel.shape[:2], dtype=bool)
    for obj_id in (3, 8):
        swatches |= (panel == object_colour(obj_id)).all(axis=2)
    assert swatches.sum() >= 2 * 9  # a colour swatch per object
    luma = panel.mean(axis=2)
    assert (luma > 200).sum() > 30  # light text ...
    # ... and no dark outline around its glyphs: nothing but the swatches is darker than the panel.
    assert luma[~swatches].min() >= panel_level - 1


def test_banner_is_opaque_readable_and_drawing_it_twice_changes_nothing() -> None:
    once = draw_overlay(grey_frame(), FrameOutputs.from_result(result()), banner="RANDOM WEIGHTS \u2014 masks")
    twice = once.copy()
    draw_banner(twice, "RANDOM WEIGHTS \u2014 masks")
    np.testing.assert_array_equal(once, twice)
    bottom = once[-8:]
    red = (bottom[..., 2] > 150) & (bottom[..., 0] < 30)
    white = bottom.min(axis=2) > 200
    assert red.mean() > 0.5 and white.any()
    assert (once[:HEIGHT - 30, :] != 0).any()  # the rest of the frame is still there


def test_overlay_without_objects_is_the_frame_in_bgr_plus_the_banner() -> None:
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    empty = FrameOutputs.from_result(TrackResult(
        0, [], torch.zeros(0, 40, 60, dtype=torch.bool), torch.zeros(0, 40, 60), torch.zeros(0, 1, 4, 4),
        torch.zeros(0), torch.zeros(0), [], torch.zeros(0, 4)))
    plain = draw_overlay(rgb, empty)
    assert (plain[..., 2] == 255).all() and (plain[..., :2] == 0).all()
    assert not np.array_equal(draw_overlay(rgb, empty, banner="x"), plain)

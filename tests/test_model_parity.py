"""Our SAM2Model equals Meta's SAM2Base (sam2==1.1.0) component by component, fp32, seeded random weights.

Tolerance: max |ours - Meta| <= 1e-4 * max(1, max |Meta|). Tiny at 512 px; one image-encoder check at 1024.
Meta's model is the oracle (testkit/oracle.py); every input is fed identically to both.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import pytest
import torch

from testkit.oracle import (
    assert_matches,
    MemoryScene,
    build_meta,
    build_ours_from_meta,
    memory_scene,
    meta_memory_attention,
    set_object_score_bias,
)
from sam2_rt.modeling.sam2 import NO_OBJ_SCORE, DecodeOutput, SAM2Model

IMAGE_SIZE = 512
FEAT = IMAGE_SIZE // 16
# Object-score head bias that makes the decoder predict "present" (see oracle.set_object_score_bias).
PRESENT_BIAS = 8.0


class Models(NamedTuple):
    meta: torch.nn.Module
    ours: SAM2Model


class Features(NamedTuple):
    feat_s0: torch.Tensor
    feat_s1: torch.Tensor
    feat: torch.Tensor
    pos: torch.Tensor


@pytest.fixture(scope="module")
def models() -> Models:
    meta = build_meta("sam2.1_hiera_tiny", IMAGE_SIZE, seed=0)
    set_object_score_bias(meta, PRESENT_BIAS)
    return Models(meta, build_ours_from_meta(meta))


@pytest.fixture(scope="module")
def features(models: Models) -> Features:
    """Meta's image features of one random image, batch 2 (two objects), used as input of both heads."""
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        backbone = models.meta.forward_image(image)
    s0, s1, feat = backbone["backbone_fpn"]
    pos = backbone["vision_pos_enc"][-1]
    return Features(*(x.expand(2, -1, -1, -1).clone() for x in (s0, s1, feat, pos)))


def seq_first(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (h*w, B, C), Meta's layout of vision features."""
    return x.flatten(2).permute(2, 0, 1)


def check_image_encoder(meta: torch.nn.Module, ours: SAM2Model, image_size: int) -> None:
    image = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        backbone = meta.forward_image(image)
        feat_s0, feat_s1, feat, pos = ours.forward_image(image)
    reference = backbone["backbone_fpn"] + [backbone["vision_pos_enc"][-1]]
    for name, ref, out in zip(("feat_s0", "feat_s1", "feat", "pos"), reference, (feat_s0, feat_s1, feat, pos)):
        assert_matches(out, ref, f"{name} at {image_size}")


def test_image_encoder_matches_meta_at_512(models: Models) -> None:
    check_image_encoder(models.meta, models.ours, IMAGE_SIZE)


@pytest.mark.slow  # two 1024-px image encoders
def test_image_encoder_matches_meta_at_1024() -> None:
    meta = build_meta("sam2.1_hiera_tiny", 1024, seed=3)
    check_image_encoder(meta, build_ours_from_meta(meta), 1024)


def test_initial_frame_feature_adds_no_memory_embedding(models: Models, features: Features) -> None:
    with torch.inference_mode():
        ref = models.meta._prepare_memory_conditioned_features(
            frame_idx=0,
            is_init_cond_frame=True,
            current_vision_feats=[seq_first(features.feat)],
            current_vision_pos_embeds=[seq_first(features.pos)],
            feat_sizes=[(FEAT, FEAT)],
            output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
            num_frames=1,
        )
        out = models.ours.no_memory_features(features.feat)
    assert_matches(out, ref, "no-memory feature")


def _points(coords: List[List[Tuple[float, float]]], labels: List[List[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(coords, dtype=torch.float32), torch.tensor(labels, dtype=torch.int32)


# name -> (point coords (2, N, 2) and labels (2, N), or None; mask prompt; multimask output)
DECODE_CASES: Dict[str, Tuple[Optional[Tuple[torch.Tensor, torch.Tensor]], bool, bool]] = {
    "one_click_multimask": (_points([[(100, 200)], [(300, 50)]], [[1], [1]]), False, True),
    "one_click_single_mask": (_points([[(100, 200)], [(300, 50)]], [[1], [1]]), False, False),
    "clicks_with_negatives": (
        _points([[(10, 20), (250, 260), (400, 90), (77, 480)], [(500, 5), (3, 3), (256, 256), (128, 300)]],
                [[1, 0, 1, 0], [1, 1, 0, 0]]),
        False,
        False,
    ),
    "box": (_points([[(50, 60), (300, 400)], [(0, 0), (511, 511)]], [[2, 3], [2, 3]]), False, False),
    "box_and_clicks": (
        _points([[(50, 60), (300, 400), (120, 130), (60, 70)], [(10, 10), (200, 300), (100, 100), (150, 20)]],
                [[2, 3, 1, 0], [2, 3, 1, 1]]),
        False,
        False,
    ),
    "mask_prompt": (None, True, False),
    "clicks_and_mask_logits": (_points([[(100, 200)], [(300, 50)]], [[1], [0]]), True, True),
}


def _decode_both(
    models: Models,
    features: Features,
    points: Optional[Tuple[torch.Tensor, torch.Tensor]],
    with_mask: bool,
    multimask: bool,
) -> DecodeOutput:
    mask_inputs = None
    if with_mask:
        mask_inputs = 6 * torch.randn(2, 1, IMAGE_SIZE // 4, IMAGE_SIZE // 4, generator=torch.Generator().manual_seed(4))
    feat_with_mem = features.feat + 0.5 * torch.randn(features.feat.shape, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = models.meta._forward_sam_heads(
            backbone_features=feat_with_mem,
            point_inputs=None if points is None else {"point_coords": points[0], "point_labels": points[1]},
            mask_inputs=mask_inputs,
            high_res_features=[features.feat_s0, features.feat_s1],
            multimask_output=multimask,
        )
        out = models.ours.decode(
            feat_with_mem,
            features.feat_s0,
            features.feat_s1,
            None if points is None else points[0],
            None if points is None else points[1],
            mask_inputs,
            multimask,
        )
    _, _, ref_ious, ref_low, ref_high, ref_ptr, ref_score = ref
    assert_matches(out.low_res_multimasks, ref[0], "low_res_multimasks")
    assert_matches(out.ious, ref_ious, "ious")
    assert_matches(out.low_res_masks, ref_low, "low_res_masks")
    assert_matches(out.high_res_masks, ref_high, "high_res_masks")
    assert_matches(out.obj_ptr, ref_ptr, "obj_ptr")
    assert_matches(out.object_score_logits, ref_score, "object_score_logits")
    return out


@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_decode_matches_meta(models: Models, features: Features, case: str) -> None:
    points, with_mask, multimask = DECODE_CASES[case]
    out = _decode_both(models, features, points, with_mask, multimask)
    assert (out.object_score_logits > 0).all(), "the fixture's objects should be present"
    assert out.low_res_multimasks.shape[1] == (3 if multimask else 1)


def test_decode_of_absent_object_matches_meta(models: Models, features: Features) -> None:
    set_object_score_bias(models.meta, -PRESENT_BIAS)
    set_object_score_bias(models.ours, -PRESENT_BIAS)
    try:
        out = _decode_both(models, features, DECODE_CASES["one_click_multimask"][0], False, True)
    finally:
        set_object_score_bias(models.meta, PRESENT_BIAS)
        set_object_score_bias(models.ours, PRESENT_BIAS)
    assert (out.low_res_masks == NO_OBJ_SCORE).all()
    assert torch.allclose(out.obj_ptr, models.ours.no_obj_ptr.expand(2, -1))


def test_mask_as_output_matches_meta(models: Models, features: Features) -> None:
    mask = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(6)) > 0.7
    mask[1] = False  # an empty mask: the object is absent
    with torch.inference_mode():
        ref = models.meta._use_mask_as_output(features.feat, [features.feat_s0, features.feat_s1], mask)
        out = models.ours.mask_as_output(features.feat, features.feat_s0, features.feat_s1, mask)
    names = ("low_res_multimasks", "ious", "low_res_masks", "high_res_masks", "obj_ptr", "object_score_logits")
    for name, ref_value in zip(names, (ref[0], ref[2], ref[3], ref[4], ref[5], ref[6])):
        assert_matches(getattr(out, name), ref_value, name)
    assert out.object_score_logits.flatten().tolist() == [10.0, -10.0]


@pytest.mark.parametrize("is_mask_from_pts", [True, False], ids=["from_points", "tracked"])
def test_encode_memory_matches_meta(models: Models, features: Features, is_mask_from_pts: bool) -> None:
    masks = 10 * torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(7))
    scores = torch.tensor([[3.0], [-2.0]])  # second object absent: gets no_obj_embed_spatial
    with torch.inference_mode():
        ref_feat, ref_pos = models.meta._encode_new_memory(
            current_vision_feats=[seq_first(features.feat)],
            feat_sizes=[(FEAT, FEAT)],
            pred_masks_high_res=masks,
            object_score_logits=scores,
            is_mask_from_pts=is_mask_from_pts,
        )
        mem_feat, mem_pos = models.ours.encode_memory(features.feat, masks, scores, is_mask_from_pts)
    assert_matches(mem_feat, ref_feat, "memory feature")
    assert_matches(mem_pos, ref_pos[-1], "memory position encoding")


# --- memory attention -------------------------------------------------------------------------------

NUM_SLOTS = 7  # num_maskmem


def meta_attention(meta: torch.nn.Module, features: Features, scene: MemoryScene) -> torch.Tensor:
    return meta_memory_attention(meta, features.feat[:1], features.pos[:1], scene)


@pytest.mark.parametrize("filled", range(1, NUM_SLOTS + 1))
def test_attend_memory_with_filled_slots_matches_meta(models: Models, features: Features, filled: int) -> None:
    scene = memory_scene(filled, seed=filled, feat_size=FEAT)
    ref = meta_attention(models.meta, features, scene)
    with torch.inference_mode():
        out = models.ours.attend_memory(features.feat[:1], features.pos[:1], *scene.slots)
    assert_matches(out, ref, f"memory attention with {filled} of {NUM_SLOTS} slots")


def test_attend_memory_batches_objects_with_different_fill(models: Models, features: Features) -> None:
    scenes = [memory_scene(2, seed=11, feat_size=FEAT), memory_scene(6, seed=12, feat_size=FEAT)]
    batched = [torch.cat(parts) for parts in zip(*(scene.slots for scene in scenes))]
    with torch.inference_mode():
        out = models.ours.attend_memory(features.feat, features.pos, *batched)
    for index, scene in enumerate(scenes):
        assert_matches(out[index : index + 1], meta_attention(models.meta, features, scene), f"object {index}")


@pytest.mark.parametrize("batch_chunk", [None, 1, 2])
def test_attend_memory_shares_one_frame_across_objects_in_chunks(
    models: Models, features: Features, batch_chunk
) -> None:
    """One frame's feature (batch 1) for three objects, attended in chunks of batch_chunk objects."""
    scenes = [memory_scene(fill, seed=20 + fill, feat_size=FEAT) for fill in (1, 4, 7)]
    batched = [torch.cat(parts) for parts in zip(*(scene.slots for scene in scenes))]
    with torch.inference_mode():
        out = models.ours.attend_memory(features.feat[:1], features.pos[:1], *batched, batch_chunk=batch_chunk)
    assert out.shape[0] == len(scenes)
    for index, scene in enumerate(scenes):
        assert_matches(out[index : index + 1], meta_attention(models.meta, features, scene), f"object {index}")


def test_attend_memory_rejects_mismatched_batches(models: Models, features: Features) -> None:
    scenes = [memory_scene(2, seed=30 + i, feat_size=FEAT) for i in range(3)]
    batched = [torch.cat(parts) for parts in zip(*(scene.slots for scene in scenes))]
    feat2, pos2 = features.feat[:1].expand(2, -1, -1, -1), features.pos[:1].expand(2, -1, -1, -1)
    with torch.inference_mode(), pytest.raises(ValueError, match="batch of curr"):
        models.ours.attend_memory(feat2, pos2, *batched)
    with torch.inference_mode(), pytest.raises(ValueError, match="batch_chunk"):
        models.ours.attend_memory(features.feat[:1], features.pos[:1], *batched, batch_chunk=0)


def test_attend_memory_of_sam2_0_matches_meta(features: Features) -> None:
    """SAM 2 (not 2.1): pointers carry no temporal encoding."""
    meta = build_meta("sam2_hiera_tiny", IMAGE_SIZE, seed=8)
    ours = build_ours_from_meta(meta)
    scene = memory_scene(4, seed=13, feat_size=FEAT)
    with torch.inference_mode():
        out = ours.attend_memory(features.feat[:1], features.pos[:1], *scene.slots)
    assert_matches(out, meta_attention(meta, features, scene), "SAM 2 memory attention")

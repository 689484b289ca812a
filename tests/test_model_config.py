"""Every official config builds our model with exactly Meta's state_dict keys and shapes, and with
Meta's values for every behaviour flag (no forward pass)."""

from __future__ import annotations

import pytest
import torch

from testkit.oracle import META_YAML, meta_overrides
from sam2_rt.modeling.config import SAM2_MODEL_NAMES, get_config
from sam2_rt.modeling.sam2 import SAM2Model
from sam2_rt.modeling.transformer import RoPEAttention

# SAM2Base attributes that are fields of ModelConfig under the same name.
# Every official model; the larger ones built at full size are slow on a CPU: only the tiny one in the fast tier.
EVERY_MODEL = [name if name == "sam2.1_hiera_tiny" else pytest.param(name, marks=pytest.mark.slow)
               for name in SAM2_MODEL_NAMES]

SAME_NAME_FIELDS = (
    "image_size",
    "num_maskmem",
    "max_obj_ptrs_in_encoder",
    "max_cond_frames_in_attn",
    "memory_temporal_stride_for_eval",
    "sigmoid_scale_for_mem_enc",
    "sigmoid_bias_for_mem_enc",
    "binarize_mask_from_pts_for_mem_enc",
    "use_mask_input_as_output_without_sam",
    "multimask_output_in_sam",
    "multimask_min_pt_num",
    "multimask_max_pt_num",
    "multimask_output_for_tracking",
    "use_multimask_token_for_obj_ptr",
    "iou_prediction_use_sigmoid",
    "only_obj_ptrs_in_the_past_for_eval",
    "add_tpos_enc_to_obj_ptrs",
    "proj_tpos_enc_in_obj_ptrs",
    "use_signed_tpos_enc_to_obj_ptrs",
    "hidden_dim",
    "mem_dim",
    "backbone_stride",
)


def build_meta_untrained(name: str, image_size: int) -> torch.nn.Module:
    from sam2.build_sam import build_sam2_video_predictor

    return build_sam2_video_predictor(
        META_YAML[name], ckpt_path=None, device="cpu", hydra_overrides_extra=meta_overrides(image_size)
    )


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_state_dict_keys_and_shapes_equal_meta(name: str) -> None:
    meta = build_meta_untrained(name, 1024)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ours = SAM2Model(get_config(name))
    meta_shapes = {key: tuple(value.shape) for key, value in meta.state_dict().items()}
    our_shapes = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    assert sorted(our_shapes) == sorted(meta_shapes), (
        f"missing {sorted(set(meta_shapes) - set(our_shapes))}, unexpected {sorted(set(our_shapes) - set(meta_shapes))}"
    )
    assert our_shapes == meta_shapes

    config = get_config(name)
    for field in SAME_NAME_FIELDS:
        assert getattr(config, field) == getattr(meta, field), field
    assert config.no_obj_embed_spatial == (meta.no_obj_embed_spatial is not None)
    decoder = meta.sam_mask_decoder
    assert config.dynamic_multimask_via_stability == decoder.dynamic_multimask_via_stability
    assert config.dynamic_multimask_stability_delta == decoder.dynamic_multimask_stability_delta
    assert config.dynamic_multimask_stability_thresh == decoder.dynamic_multimask_stability_thresh
    trunk = meta.image_encoder.trunk
    assert tuple(config.window_spec) == tuple(trunk.window_spec)
    assert tuple(config.global_att_blocks) == tuple(trunk.global_att_blocks)
    assert tuple(config.window_pos_embed_bkg_spatial_size) == tuple(trunk.window_pos_embed_bkg_spatial_size)
    assert [block.window_size for block in ours.image_encoder.trunk.blocks] == [
        block.window_size for block in trunk.blocks
    ]
    assert [block.q_stride for block in ours.image_encoder.trunk.blocks] == [
        block.q_stride for block in trunk.blocks
    ]


@pytest.mark.parametrize("image_size", [256, 512, 1024])
def test_image_size_sets_decoder_and_rope_grids(image_size: int) -> None:
    config = get_config("sam2.1_hiera_tiny", image_size)
    with torch.device("meta"):
        model = SAM2Model(config)
    assert config.feat_size == image_size // 16
    assert model.sam_prompt_encoder.image_embedding_size == (image_size // 16, image_size // 16)
    assert model.sam_prompt_encoder.mask_input_size == (image_size // 4, image_size // 4)
    assert model.sam_prompt_encoder.input_image_size == (image_size, image_size)
    rope_tables = [
        module.rope_cos for module in model.memory_attention.modules() if isinstance(module, RoPEAttention)
    ]
    assert len(rope_tables) == 2 * config.mem_attn_num_layers
    assert all(table.shape[0] == config.feat_size**2 for table in rope_tables)


@pytest.mark.parametrize("image_size", [0, 500, 1000])
def test_image_size_not_multiple_of_32_is_refused(image_size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        get_config("sam2.1_hiera_tiny", image_size)


def test_unknown_model_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        get_config("sam3_hiera_tiny")


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_every_config_tracks_a_small_frame_without_nan(name: str) -> None:
    """A forward of every official config (seeded random weights, 128 px): prompted frame, then tracked frame."""
    import numpy as np

    from sam2_rt.weights.checkpoint import random_model
    from sam2_rt import Tracker, TrackerConfig

    tracker = Tracker(random_model(name, image_size=128), TrackerConfig(max_objects=2))
    stream = tracker.create_stream()
    frame = np.zeros((96, 128, 3), dtype=np.uint8)
    frame[20:60, 30:90] = (200, 60, 40)
    tracker.add_prompt(stream, 1, points=[[50.0, 40.0]], labels=[1], frame_size=(96, 128))
    tracker.add_prompt(stream, 2, box=[70.0, 10.0, 120.0, 80.0], frame_size=(96, 128))
    for _ in range(2):
        result = tracker.step(stream, frame)
        assert result.object_ids == [1, 2]
        assert result.logits.shape == (2, 96, 128) and result.low_res_logits.shape == (2, 1, 32, 32)
        for tensor in (result.logits, result.ious, result.presence, result.boxes):
            assert torch.isfinite(tensor).all(), name

"""Meta's SAM 2 (sam2==1.1.0) as a test oracle, with seeded random weights, and our model built from it.

    meta = build_meta("sam2.1_hiera_tiny", image_size=512, seed=0)   # SAM2VideoPredictor, eval, CPU
    ours = build_ours_from_meta(meta)                                  # SAM2Model, same weights (strict)
    scene = memory_scene(filled=3, seed=0, feat_size=32)              # the same memories both ways
    meta_memory_attention(meta, feat, pos, scene) vs ours.attend_memory(feat, pos, *scene.slots)

Random weights: Meta initialises many parameters to zeros or constants (position embeddings, layer
scales, tokens), which would hide mistakes in the code that uses them. Every parameter is therefore
redrawn from one seeded generator, scaled so activations stay of order one: Linear/Conv weights
N(0, 1/fan_in), LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2), every other parameter
(embeddings, tokens, position tables, layer scales) N(0, 0.5^2).
"""

from __future__ import annotations

import math
import random
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from sam2_rt.modeling.config import get_config
from sam2_rt.modeling.factory import create_model
from sam2_rt.modeling.sam2 import SAM2Model

# Meta's config file of each model (relative to the installed sam2 package).
META_YAML: Dict[str, str] = {
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def meta_overrides(image_size: int) -> List[str]:
    """Hydra overrides: input size, and no hole filling (it needs Meta's CUDA extension; we never fill)."""
    return [f"++model.image_size={image_size}", "++model.fill_hole_area=0"]


def randomize_parameters(model: nn.Module, seed: int) -> None:
    """Redraw every parameter of model in place from a generator seeded with seed (see module doc)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            is_norm = "LayerNorm" in type(module).__name__
            has_fan_in = isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
            for param_name, param in module.named_parameters(recurse=False):
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                if is_norm and param_name == "weight":
                    value = 1.0 + 0.1 * noise
                elif param_name == "bias":
                    value = 0.1 * noise
                elif has_fan_in and param_name == "weight":
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(param)
                    value = noise / math.sqrt(fan_in)
                else:
                    value = 0.5 * noise
                param.copy_(value.to(param.dtype))


def build_meta(name: str, image_size: int = 512, seed: int = 0) -> nn.Module:
    """Meta's SAM2VideoPredictor for a model name (see sam2_rt.modeling.config.MODEL_NAMES), on CPU in eval mode,
    with every parameter drawn from seed (its buffers too: the global RNG is seeded before building).

    The model name is kept as ``meta.sam2_rt_name`` for build_ours_from_meta.
    """
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    meta = build_sam2_video_predictor(
        META_YAML[name], ckpt_path=None, device="cpu", hydra_overrides_extra=meta_overrides(image_size)
    )
    randomize_parameters(meta, seed)
    meta.sam2_rt_name = name
    return meta.eval()


def build_ours_from_meta(meta: nn.Module) -> SAM2Model:
    """Our SAM2Model of the same name and image size with Meta's state_dict copied in (strict=True)."""
    ours = SAM2Model(get_config(meta.sam2_rt_name, meta.image_size))
    ours.load_state_dict(meta.state_dict(), strict=True)
    return ours.eval()


def set_object_score_bias(model: nn.Module, bias: float) -> None:
    """Set the last bias of the object-score MLP (same key in Meta's model and ours).

    With random weights the object-score logit is near 0, and an absent object turns every mask logit
    into NO_OBJ_SCORE (-1024), which hides errors in the masks: a bias of +8 makes objects present.
    """
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(bias)


def seeded_model(image_size: int, name: str = "sam2.1_hiera_tiny", seed: int = 0) -> SAM2Model:
    """Our model with every parameter drawn from seed (see the module doc), in eval mode: the seeded model of
    the tests that need no Meta model beside it (build_ours_from_meta gives the same weights with one)."""
    model = create_model(get_config(name, image_size))
    randomize_parameters(model, seed=seed)
    return model.eval()


def present_objects_model(image_size: int, name: str = "sam2.1_hiera_tiny", seed: int = 0) -> SAM2Model:
    """seeded_model whose objects are present unless a prompt says otherwise (object score bias +4), so that
    tracking produces real masks; in eval mode."""
    model = seeded_model(image_size, name, seed)
    set_object_score_bias(model, 4.0)
    return model


class MemoryScene(NamedTuple):
    """Memories of one object (batch 1), as Meta's output_dict and as our fixed slots."""

    # {"cond_frame_outputs": {t: out}, "non_cond_frame_outputs": {t: out}} for Meta, current frame frame_idx.
    output_dict: Dict[str, Dict[int, Dict[str, object]]]
    frame_idx: int
    # SAM2Model.attend_memory's mem_feats, mem_pos, mem_tpos_index, mem_valid, ptrs, ptr_tpos, ptr_valid.
    slots: Tuple[torch.Tensor, ...]


def memory_scene(
    filled: int,
    seed: int,
    feat_size: int,
    num_maskmem: int = 7,
    num_ptr_slots: int = 16,
    mem_dim: int = 64,
    hidden_dim: int = 256,
    frame_idx: int = 20,
    memory_tokens: Optional[int] = None,
) -> MemoryScene:
    """Random memories: a conditioning frame at t=0, filled-1 of the num_maskmem-1 frames before frame_idx
    (random gaps), and 4 older frames that only contribute object pointers. Our slots hold the same
    memories and pointers at shuffled slot positions; the other slots are invalid (and zero).

    memory_tokens: None for SAM 2's memories, (1, mem_dim, feat_size, feat_size) maps; a number for EdgeTAM's
    perceiver outputs, (1, memory_tokens, mem_dim) tokens (our slots are then (1, num_maskmem, T, mem_dim))."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    recent = rng.sample(range(frame_idx - num_maskmem + 1, frame_idx), filled - 1)
    older = rng.sample(range(frame_idx - 15, frame_idx - num_maskmem + 1), 4)

    memory_shape = (mem_dim, feat_size, feat_size) if memory_tokens is None else (memory_tokens, mem_dim)

    def frame_output() -> Dict[str, object]:
        return {
            "maskmem_features": torch.randn(1, *memory_shape, generator=generator),
            "maskmem_pos_enc": [torch.randn(1, *memory_shape, generator=generator)],
            "obj_ptr": torch.randn(1, hidden_dim, generator=generator),
        }

    cond = {0: frame_output()}
    non_cond = {t: frame_output() for t in sorted(recent + older)}

    mem_feats = torch.zeros(1, num_maskmem, *memory_shape)
    mem_pos = torch.zeros(1, num_maskmem, *memory_shape)
    mem_tpos_index = torch.zeros(1, num_maskmem, dtype=torch.long)
    mem_valid = torch.zeros(1, num_maskmem, dtype=torch.bool)
    ptrs = torch.zeros(1, num_ptr_slots, hidden_dim)
    ptr_tpos = torch.zeros(1, num_ptr_slots)
    ptr_valid = torch.zeros(1, num_ptr_slots, dtype=torch.bool)

    # Meta's t_pos: 0 for conditioning frames, num_maskmem - (frame_idx - t) for recent frame t.
    memories = [(0, cond[0])] + [(num_maskmem - (frame_idx - t), non_cond[t]) for t in recent]
    for slot, (t_pos, out) in zip(rng.sample(range(num_maskmem), len(memories)), memories):
        mem_feats[0, slot] = out["maskmem_features"][0]
        mem_pos[0, slot] = out["maskmem_pos_enc"][0][0]
        mem_tpos_index[0, slot] = num_maskmem - t_pos - 1
        mem_valid[0, slot] = True
    pointers = [(frame_idx, cond[0])] + [(frame_idx - t, out) for t, out in non_cond.items()]
    for slot, (distance, out) in zip(rng.sample(range(num_ptr_slots), len(pointers)), pointers):
        ptrs[0, slot] = out["obj_ptr"][0]
        ptr_tpos[0, slot] = distance
        ptr_valid[0, slot] = True
    return MemoryScene(
        {"cond_frame_outputs": cond, "non_cond_frame_outputs": non_cond},
        frame_idx,
        (mem_feats, mem_pos, mem_tpos_index, mem_valid, ptrs, ptr_tpos, ptr_valid),
    )


def meta_memory_attention(meta: nn.Module, feat: torch.Tensor, pos: torch.Tensor, scene: MemoryScene) -> torch.Tensor:
    """Meta's _prepare_memory_conditioned_features on a non-initial frame of a 100-frame video.

    feat, pos: (1, C, h, w). Returns (1, C, h, w).
    """
    height, width = feat.shape[-2:]
    with torch.inference_mode():
        return meta._prepare_memory_conditioned_features(
            frame_idx=scene.frame_idx,
            is_init_cond_frame=False,
            current_vision_feats=[feat.flatten(2).permute(2, 0, 1)],
            current_vision_pos_embeds=[pos.flatten(2).permute(2, 0, 1)],
            feat_sizes=[(height, width)],
            output_dict=scene.output_dict,
            num_frames=100,
        )


def assert_matches(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """The parity criterion of issue 3: equal shapes and max |ours - ref| <= 1e-4 * max(1, max |ref|)."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != Meta's {tuple(ref.shape)}"
    diff = (ours.float() - ref.float()).abs().max().item()
    bound = 1e-4 * max(1.0, ref.float().abs().max().item())
    assert diff <= bound, f"{what}: max abs diff {diff:.3g} > {bound:.3g}"


# --------------------------------------------------------------------------- recurrent comparisons

# How far two runs of the same stream may drift apart when only the order of float sums differs (another
# thread count or CPU, a compiled graph, a batch of streams, Meta's code). tests/noise_floor.py measures the
# floor: the eager tracker against itself with 1, 2 and 3 torch threads over the streams of test_fixed_shapes
# and test_tracker_streams, in three processes (bench/RESULTS.md, "Noise floor of the recurrent comparisons";
# 2-core Xeon, AVX512). Worst of a frame's max |logit difference| / max(1, max |logit|): 1.4e-4, rounded up to
# THREAD_NOISE_FLOOR; of a presence probability or a predicted IoU: 8.4e-6, rounded up to SCORE_NOISE_FLOOR.
# The same comparisons run twice with one thread count are bit-equal. The difference grows through the bfloat16
# memory (one rounding step carried to later frames) and depends on how the CPU blocks its GEMMs (issue 22: an
# AMD EPYC gave 1.4e-4 compiled against eager), so the tests allow RECURRENT_MARGIN times the floor; a wrong
# row, frame or object gives O(1).
THREAD_NOISE_FLOOR = 2e-4
SCORE_NOISE_FLOOR = 1e-5
RECURRENT_MARGIN = 10
RECURRENT_BOUND = RECURRENT_MARGIN * THREAD_NOISE_FLOOR
SCORE_BOUND = RECURRENT_MARGIN * SCORE_NOISE_FLOOR


def assert_same_tracking(got, want, where: str, bound: float = RECURRENT_BOUND) -> None:
    """Two TrackResults of the same stream and frame computed in different ways agree up to float noise:
    same ids and states; logits within bound * max(1, max |logit|); presence and IoU within SCORE_BOUND; masks
    equal wherever the logit is farther than the logit bound from the threshold 0 (only pixels within the noise
    of it may flip), and boxes equal for each object whose mask is equal."""
    assert got.object_ids == want.object_ids and got.states == want.states, where
    assert got.logits.shape == want.logits.shape and got.boxes.shape == want.boxes.shape, where
    if not want.object_ids:
        return
    logit_bound = bound * max(1.0, want.logits.abs().max().item())
    diff = (got.logits - want.logits).abs().max().item()
    assert diff <= logit_bound, f"{where}: max |logit difference| {diff:.3g} > {logit_bound:.3g}"
    assert (got.presence - want.presence).abs().max().item() <= SCORE_BOUND, (where, got.presence, want.presence)
    assert (got.ious - want.ious).abs().max().item() <= SCORE_BOUND, (where, got.ious, want.ious)
    far = want.logits.abs() > logit_bound
    assert torch.equal(got.masks[far], want.masks[far]), f"{where}: a mask differs away from the threshold"
    for index in range(len(want.object_ids)):
        if torch.equal(got.masks[index], want.masks[index]):
            assert torch.equal(got.boxes[index], want.boxes[index]), f"{where}: box of object {index}"

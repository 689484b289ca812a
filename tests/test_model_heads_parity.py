"""Our SAM 2 heads (prompt encoder, mask decoder, memory encoder, memory attention) against Meta's
sam2==1.1.0 modules: built with the same constructor arguments (SAM 2.1 tiny), Meta's randomised weights
loaded into ours with strict=True, identical random inputs, max abs diff <= 1e-4 * max(1, max |ref|).

Image size 512 (32x32 features) unless a test says otherwise; memory attention is also checked at 1024.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest
import torch
from testkit.oracle import assert_matches, randomize_parameters
from sam2.modeling.memory_attention import MemoryAttention as MetaMemoryAttention
from sam2.modeling.memory_attention import MemoryAttentionLayer as MetaMemoryAttentionLayer
from sam2.modeling.memory_encoder import CXBlock as MetaCXBlock
from sam2.modeling.memory_encoder import Fuser as MetaFuser
from sam2.modeling.memory_encoder import MaskDownSampler as MetaMaskDownSampler
from sam2.modeling.memory_encoder import MemoryEncoder as MetaMemoryEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine as MetaPositionEmbeddingSine
from sam2.modeling.sam.mask_decoder import MaskDecoder as MetaMaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder as MetaPromptEncoder
from sam2.modeling.sam.transformer import RoPEAttention as MetaRoPEAttention
from sam2.modeling.sam.transformer import TwoWayTransformer as MetaTwoWayTransformer
from torch import Tensor, nn

from sam2_rt.modeling.mask_decoder import MaskDecoder
from sam2_rt.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2_rt.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2_rt.modeling.position_encoding import PositionEmbeddingSine
from sam2_rt.modeling.prompt_encoder import PromptEncoder
from sam2_rt.modeling.transformer import RoPEAttention, TwoWayTransformer

IMAGE_SIZE = 512
HIDDEN = 256
MEM_DIM = 64
NUM_SLOTS = 7  # num_maskmem
NUM_POINTERS = 16  # max_obj_ptrs_in_encoder; each pointer is HIDDEN / MEM_DIM = 4 memory tokens
TOKENS_PER_POINTER = HIDDEN // MEM_DIM


def twins(build_meta: Callable[[], nn.Module], build_ours: Callable[[], nn.Module], seed: int = 0):
    """Meta's module with every parameter randomised, and ours with Meta's state_dict (strict), both eval."""
    torch.manual_seed(seed)
    meta = build_meta()
    randomize_parameters(meta, seed)
    ours = build_ours()
    ours.load_state_dict(meta.state_dict(), strict=True)
    return meta.eval(), ours.eval()


# ----------------------------------------------------------------------------------------------------
# Builders: one set of constructor arguments (Meta's SAM2Base._build_sam_heads and the sam2.1 tiny yaml,
# with build_sam2_video_predictor's dynamic-multimask overrides), applied to either side's classes.


def prompt_encoder(cls: type, image_size: int = IMAGE_SIZE) -> nn.Module:
    side = image_size // 16
    return cls(embed_dim=HIDDEN, image_embedding_size=(side, side), input_image_size=(image_size, image_size),
               mask_in_chans=16)


def mask_decoder(decoder_cls: type, transformer_cls: type) -> nn.Module:
    return decoder_cls(
        num_multimask_outputs=3,
        transformer=transformer_cls(depth=2, embedding_dim=HIDDEN, mlp_dim=2048, num_heads=8),
        transformer_dim=HIDDEN,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    )


class Heads(nn.Module):
    """Prompt encoder + mask decoder, called the way SAM2Base._forward_sam_heads calls them."""

    def __init__(self, prompt: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.sam_prompt_encoder = prompt
        self.sam_mask_decoder = decoder

    def forward(self, image: Tensor, feat_s0: Tensor, feat_s1: Tensor, coords: Tensor, labels: Tensor,
                mask: Optional[Tensor], multimask: bool) -> Tuple[Tensor, ...]:
        sparse, dense = self.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask)
        return self.sam_mask_decoder(
            image_embeddings=image,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=[feat_s0, feat_s1],
        )


def heads_pair(seed: int = 0) -> Tuple[Heads, Heads]:
    return twins(
        lambda: Heads(prompt_encoder(MetaPromptEncoder), mask_decoder(MetaMaskDecoder, MetaTwoWayTransformer)),
        lambda: Heads(prompt_encoder(PromptEncoder), mask_decoder(MaskDecoder, TwoWayTransformer)),
        seed,
    )


def memory_encoder(encoder_cls, downsampler_cls, fuser_cls, block_cls, position_cls) -> nn.Module:
    return encoder_cls(
        out_dim=MEM_DIM,
        position_encoding=position_cls(num_pos_feats=MEM_DIM, normalize=True, scale=None, temperature=10000),
        mask_downsampler=downsampler_cls(kernel_size=3, stride=2, padding=1),
        fuser=fuser_cls(
            layer=block_cls(dim=HIDDEN, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True),
            num_layers=2,
        ),
    )


def rope_attention(cls: type, feat_sizes: Sequence[int], cross: bool) -> nn.Module:
    extra = dict(rope_k_repeat=True, kv_in_dim=MEM_DIM) if cross else {}
    return cls(rope_theta=10000.0, feat_sizes=list(feat_sizes), embedding_dim=HIDDEN, num_heads=1,
               downsample_rate=1, dropout=0.1, **extra)


def memory_attention(attention_cls, layer_cls, rope_cls, feat_sizes: Sequence[int]) -> nn.Module:
    layer = layer_cls(
        activation="relu",
        dim_feedforward=2048,
        dropout=0.1,
        pos_enc_at_attn=False,
        self_attention=rope_attention(rope_cls, feat_sizes, cross=False),
        d_model=HIDDEN,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=rope_attention(rope_cls, feat_sizes, cross=True),
    )
    return attention_cls(d_model=HIDDEN, pos_enc_at_input=True, layer=layer, num_layers=4)


def memory_attention_pair(image_size: int) -> Tuple[nn.Module, nn.Module]:
    """Meta's built as its yaml says (feat_sizes 64x64, recomputed in forward for other sizes); ours sized
    for the image (tables precomputed)."""
    side = image_size // 16
    return twins(
        lambda: memory_attention(MetaMemoryAttention, MetaMemoryAttentionLayer, MetaRoPEAttention, (64, 64)),
        lambda: memory_attention(MemoryAttention, MemoryAttentionLayer, RoPEAttention, (side, side)),
    )


@pytest.fixture(scope="module")
def heads() -> Tuple[Heads, Heads]:
    """(Meta's, ours) prompt encoder + mask decoder; tests that change attributes restore them."""
    return heads_pair()


@pytest.fixture(scope="module")
def attention_512() -> Tuple[nn.Module, nn.Module]:
    """(Meta's, ours) memory attention at 512."""
    return memory_attention_pair(IMAGE_SIZE)


# ----------------------------------------------------------------------------------------------------
# Prompt encoder + mask decoder


def random_points(generator: torch.Generator, batch: int, labels: Sequence[int]) -> Tuple[Tensor, Tensor]:
    coords = torch.rand(batch, len(labels), 2, generator=generator) * IMAGE_SIZE
    return coords, torch.tensor(labels, dtype=torch.int32).expand(batch, -1).contiguous()


# Point prompts as SAM2Base receives them: a box is its two corners with labels 2 (top-left) and 3
# (bottom-right); -1 is padding; a mask-only prompt carries one padding point.
PROMPTS: Dict[str, Tuple[List[int], bool]] = {
    "one_click": ([1], False),
    "clicks_with_negatives": ([1, 0, 1, 0], False),
    "box": ([2, 3], False),
    "box_and_clicks": ([2, 3, 1, 0], False),
    "clicks_with_padding": ([1, 0, -1, -1], False),
    "mask": ([-1], True),
    "mask_and_click": ([1], True),
}


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single_mask"])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_prompt_encoder_and_mask_decoder_match_meta(heads, prompt: str, multimask: bool) -> None:
    meta, ours = heads
    generator = torch.Generator().manual_seed(1)
    batch, side = 3, IMAGE_SIZE // 16
    labels, with_mask = PROMPTS[prompt]
    coords, labels_t = random_points(generator, batch, labels)
    mask = torch.randn(batch, 1, 4 * side, 4 * side, generator=generator) * 5 if with_mask else None
    image = torch.randn(batch, HIDDEN, side, side, generator=generator)
    feat_s0 = torch.randn(batch, HIDDEN // 8, 4 * side, 4 * side, generator=generator)
    feat_s1 = torch.randn(batch, HIDDEN // 4, 2 * side, 2 * side, generator=generator)

    with torch.inference_mode():
        meta_sparse, meta_dense = meta.sam_prompt_encoder((coords, labels_t), None, mask)
        our_sparse, our_dense = ours.sam_prompt_encoder((coords, labels_t), None, mask)
        assert_matches(our_sparse, meta_sparse, "sparse embeddings")
        assert_matches(our_dense, meta_dense, "dense embeddings")
        assert_matches(ours.sam_prompt_encoder.get_dense_pe(), meta.sam_prompt_encoder.get_dense_pe(), "dense pe")
        expected = meta(image, feat_s0, feat_s1, coords, labels_t, mask, multimask)
        got = ours(image, feat_s0, feat_s1, coords, labels_t, mask, multimask)
    for name, our_out, meta_out in zip(("masks", "iou", "sam tokens", "object score"), got, expected):
        assert_matches(our_out, meta_out, name)


@pytest.mark.parametrize("with_points", [True, False], ids=["box_and_points", "box_only"])
def test_prompt_encoder_box_argument_matches_meta(with_points: bool) -> None:
    meta, ours = twins(lambda: prompt_encoder(MetaPromptEncoder), lambda: prompt_encoder(PromptEncoder))
    generator = torch.Generator().manual_seed(2)
    boxes = torch.rand(2, 4, generator=generator) * IMAGE_SIZE
    points = random_points(generator, 2, [1, 0]) if with_points else None
    with torch.inference_mode():
        for our_out, meta_out in zip(ours(points, boxes, None), meta(points, boxes, None)):
            assert_matches(our_out, meta_out, "box embeddings")


def test_single_mask_falls_back_to_best_multimask_when_unstable_as_meta() -> None:
    meta, ours = heads_pair()  # own pair: the test changes the stability threshold
    generator = torch.Generator().manual_seed(3)
    batch, side = 8, IMAGE_SIZE // 16
    coords, labels = random_points(generator, batch, [1])
    image = torch.randn(batch, HIDDEN, side, side, generator=generator)
    feat_s0 = torch.randn(batch, HIDDEN // 8, 4 * side, 4 * side, generator=generator)
    feat_s1 = torch.randn(batch, HIDDEN // 4, 2 * side, 2 * side, generator=generator)
    with torch.inference_mode():
        sparse, dense = meta.sam_prompt_encoder((coords, labels), None, None)
        all_masks, *_ = meta.sam_mask_decoder.predict_masks(
            image, meta.sam_prompt_encoder.get_dense_pe(), sparse, dense, False, [feat_s0, feat_s1]
        )
        stability = meta.sam_mask_decoder._get_stability_scores(all_masks[:, :1])[:, 0]
        # A threshold between the scores makes some objects stable and the others fall back.
        threshold = stability.sort().values[batch // 2].item()
        for module in (meta, ours):
            module.sam_mask_decoder.dynamic_multimask_stability_thresh = threshold
        stable = stability >= threshold
        assert stable.any() and not stable.all(), "both branches must be exercised"
        expected = meta(image, feat_s0, feat_s1, coords, labels, None, False)
        got = ours(image, feat_s0, feat_s1, coords, labels, None, False)
    for name, our_out, meta_out in zip(("masks", "iou", "sam tokens", "object score"), got, expected):
        assert_matches(our_out, meta_out, name)


def test_mask_decoder_repeats_one_image_for_many_prompts_as_meta(heads) -> None:
    meta, ours = heads
    generator = torch.Generator().manual_seed(4)
    batch, side = 3, IMAGE_SIZE // 16
    coords, labels = random_points(generator, batch, [1, 0])
    image = torch.randn(1, HIDDEN, side, side, generator=generator)
    feat_s0 = torch.randn(batch, HIDDEN // 8, 4 * side, 4 * side, generator=generator)
    feat_s1 = torch.randn(batch, HIDDEN // 4, 2 * side, 2 * side, generator=generator)
    with torch.inference_mode():
        outputs = []
        for heads in (meta, ours):
            sparse, dense = heads.sam_prompt_encoder((coords, labels), None, None)
            outputs.append(heads.sam_mask_decoder(image, heads.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                                                  True, True, [feat_s0, feat_s1]))
    for name, meta_out, our_out in zip(("masks", "iou", "sam tokens", "object score"), *outputs):
        assert_matches(our_out, meta_out, name)


# ----------------------------------------------------------------------------------------------------
# Memory encoder


@pytest.mark.parametrize("skip_mask_sigmoid", [False, True], ids=["logits", "probabilities"])
def test_memory_encoder_matches_meta(skip_mask_sigmoid: bool) -> None:
    meta, ours = twins(
        lambda: memory_encoder(MetaMemoryEncoder, MetaMaskDownSampler, MetaFuser, MetaCXBlock,
                               MetaPositionEmbeddingSine),
        lambda: memory_encoder(MemoryEncoder, MaskDownSampler, Fuser, CXBlock, PositionEmbeddingSine),
    )
    generator = torch.Generator().manual_seed(5)
    side = IMAGE_SIZE // 16
    pix_feat = torch.randn(2, HIDDEN, side, side, generator=generator)
    masks = torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 10
    if skip_mask_sigmoid:
        masks = torch.sigmoid(masks) * 20.0 - 10.0  # SAM2Base's scaled sigmoid for memory
    with torch.inference_mode():
        expected = meta(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
        features, pos = ours(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    assert_matches(features, expected["vision_features"], "memory features")
    assert_matches(pos, expected["vision_pos_enc"][0], "memory positional encoding")


# ----------------------------------------------------------------------------------------------------
# Memory attention: fixed slots + key mask against Meta over only the valid memories


def memory_inputs(generator: torch.Generator, batch: int, side: int, num_slots: int, num_pointers: int):
    """Random current-frame features (B, HW, 256) + pos, and a fixed-slot memory (B, slots*HW + 4P, 64) + pos."""
    hw = side * side
    num_tokens = num_slots * hw + num_pointers * TOKENS_PER_POINTER
    curr = torch.randn(batch, hw, HIDDEN, generator=generator)
    curr_pos = torch.randn(batch, hw, HIDDEN, generator=generator)
    memory = torch.randn(batch, num_tokens, MEM_DIM, generator=generator)
    memory_pos = torch.randn(batch, num_tokens, MEM_DIM, generator=generator)
    return curr, curr_pos, memory, memory_pos


def key_mask(slots: Sequence[int], pointers: Sequence[int], hw: int, num_slots: int, num_pointers: int) -> Tensor:
    """(Nm,) bool: True for the tokens of the given valid slots and pointers."""
    slot_valid = torch.zeros(num_slots, dtype=torch.bool)
    slot_valid[list(slots)] = True
    pointer_valid = torch.zeros(num_pointers, dtype=torch.bool)
    pointer_valid[list(pointers)] = True
    return torch.cat((slot_valid.repeat_interleave(hw), pointer_valid.repeat_interleave(TOKENS_PER_POINTER)))


def meta_over_valid(meta: nn.Module, curr: Tensor, curr_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                    valid: Tensor, num_pointers: int) -> Tensor:
    """Meta's attention of one batch row over only its valid memories and pointers (seq-first tensors)."""
    num_ptr_tokens = int(valid[-num_pointers * TOKENS_PER_POINTER:].sum())
    out = meta(curr[:, None], memory[valid][:, None], curr_pos[:, None], memory_pos[valid][:, None],
               num_obj_ptr_tokens=num_ptr_tokens)
    return out[:, 0]


def check_fixed_slots_against_meta(pair: Tuple[nn.Module, nn.Module], image_size: int, num_slots: int,
                                   num_pointers: int, valid_slots: Sequence[Sequence[int]],
                                   valid_pointers: Sequence[Sequence[int]], seed: int) -> None:
    """Ours over num_slots fixed slots and num_pointers pointers with a key mask (one row per entry of
    valid_slots) against Meta over only each row's valid slots and pointers."""
    meta, ours = pair
    side = image_size // 16
    hw = side * side
    batch = len(valid_slots)
    curr, curr_pos, memory, memory_pos = memory_inputs(torch.Generator().manual_seed(seed), batch, side,
                                                       num_slots, num_pointers)
    valid = torch.stack([key_mask(s, p, hw, num_slots, num_pointers)
                         for s, p in zip(valid_slots, valid_pointers)])
    with torch.inference_mode():
        got = ours(curr, curr_pos, memory, memory_pos, num_pointers * TOKENS_PER_POINTER, valid)
        for row in range(batch):
            expected = meta_over_valid(meta, curr[row], curr_pos[row], memory[row], memory_pos[row], valid[row],
                                       num_pointers)
            assert_matches(got[row], expected, f"row {row} with slots {valid_slots[row]}")


@pytest.mark.parametrize("filled", range(1, NUM_SLOTS + 1))
def test_memory_attention_with_n_of_7_slots_equals_meta_over_n_memories(attention_512, filled: int) -> None:
    generator = torch.Generator().manual_seed(100 + filled)
    # The filled slots are not necessarily the first ones; a varying subset of the 16 pointers is valid.
    slots = sorted(torch.randperm(NUM_SLOTS, generator=generator)[:filled].tolist())
    pointers = sorted(torch.randperm(NUM_POINTERS, generator=generator)[: 2 * filled + 1].tolist())
    check_fixed_slots_against_meta(attention_512, IMAGE_SIZE, NUM_SLOTS, NUM_POINTERS, [slots], [pointers],
                                   seed=filled)


def test_memory_attention_masks_each_object_of_a_batch_with_its_own_slots(attention_512) -> None:
    check_fixed_slots_against_meta(attention_512, IMAGE_SIZE, NUM_SLOTS, NUM_POINTERS,
                                   valid_slots=[[0, 1, 6], [2, 3, 4, 5, 6]], valid_pointers=[[0, 5], list(range(12))],
                                   seed=20)


@pytest.mark.slow  # a 1024-px memory attention, ours and Meta's
def test_memory_attention_at_1024_uses_64x64_rope_like_meta() -> None:
    # 2 fixed slots (1 filled) and 2 pointers (1 valid) keep the 64x64 check affordable on a CPU.
    check_fixed_slots_against_meta(memory_attention_pair(1024), 1024, num_slots=2, num_pointers=2,
                                   valid_slots=[[1]], valid_pointers=[[0]], seed=7)


@pytest.mark.parametrize("our_table_side", [32, 64], ids=["table_for_32x32", "table_for_64x64_recomputed"])
def test_rope_cross_attention_with_pointer_tokens_matches_meta(our_table_side: int) -> None:
    meta, ours = twins(lambda: rope_attention(MetaRoPEAttention, (64, 64), cross=True),
                       lambda: rope_attention(RoPEAttention, (our_table_side, our_table_side), cross=True))
    generator = torch.Generator().manual_seed(9)
    q = torch.randn(2, 32 * 32, HIDDEN, generator=generator)
    k = torch.randn(2, 3 * 32 * 32 + 8, MEM_DIM, generator=generator)
    v = torch.randn(2, 3 * 32 * 32 + 8, MEM_DIM, generator=generator)
    with torch.inference_mode():
        assert_matches(ours(q, k, v, num_k_exclude_rope=8), meta(q, k, v, num_k_exclude_rope=8), "rope attention")


def test_our_state_dict_keys_equal_meta_for_every_head(heads, attention_512) -> None:
    pairs = {
        "prompt+decoder": heads,
        "memory_encoder": (
            memory_encoder(MetaMemoryEncoder, MetaMaskDownSampler, MetaFuser, MetaCXBlock, MetaPositionEmbeddingSine),
            memory_encoder(MemoryEncoder, MaskDownSampler, Fuser, CXBlock, PositionEmbeddingSine),
        ),
        "memory_attention": attention_512,
    }
    for name, (meta, ours) in pairs.items():
        meta_shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
        our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert our_shapes == meta_shapes, name


# ----------------------------------------------------------------------------------------------------
# torch.export at static shapes gives the eager result


def export_and_compare(module: nn.Module, args: tuple, what: str) -> None:
    module = module.eval()
    with torch.no_grad():
        eager = module(*args)
        exported = torch.export.export(module, args).module()
        got = exported(*args)
    eager_flat = eager if isinstance(eager, (tuple, list)) else (eager,)
    got_flat = got if isinstance(got, (tuple, list)) else (got,)
    assert len(got_flat) == len(eager_flat)
    for index, (ours, ref) in enumerate(zip(got_flat, eager_flat)):
        assert_matches(ours, ref, f"{what} output {index}")


class PromptAndDecoder(nn.Module):
    """The decode path with static flags, as a backend would export it."""

    def __init__(self, heads: Heads, multimask: bool) -> None:
        super().__init__()
        self.heads = heads
        self.multimask = multimask

    def forward(self, image: Tensor, feat_s0: Tensor, feat_s1: Tensor, coords: Tensor, labels: Tensor,
                mask: Tensor) -> Tuple[Tensor, ...]:
        return self.heads(image, feat_s0, feat_s1, coords, labels, mask, self.multimask)


def test_prompt_encoder_exports_and_matches_eager() -> None:
    _, ours = twins(lambda: prompt_encoder(MetaPromptEncoder), lambda: prompt_encoder(PromptEncoder))
    generator = torch.Generator().manual_seed(10)
    coords, labels = random_points(generator, 2, [2, 3, 1, -1])
    mask = torch.randn(2, 1, IMAGE_SIZE // 4, IMAGE_SIZE // 4, generator=generator)
    export_and_compare(ours, ((coords, labels), None, mask), "prompt encoder")


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single_mask"])
def test_mask_decoder_exports_and_matches_eager(heads, multimask: bool) -> None:
    _, ours = heads
    generator = torch.Generator().manual_seed(11)
    side = IMAGE_SIZE // 16
    coords, labels = random_points(generator, 2, [1, 0])
    args = (
        torch.randn(2, HIDDEN, side, side, generator=generator),
        torch.randn(2, HIDDEN // 8, 4 * side, 4 * side, generator=generator),
        torch.randn(2, HIDDEN // 4, 2 * side, 2 * side, generator=generator),
        coords,
        labels,
        torch.randn(2, 1, 4 * side, 4 * side, generator=generator),
    )
    export_and_compare(PromptAndDecoder(ours, multimask), args, "prompt encoder + mask decoder")


def test_memory_encoder_exports_and_matches_eager() -> None:
    ours = memory_encoder(MemoryEncoder, MaskDownSampler, Fuser, CXBlock, PositionEmbeddingSine)
    randomize_parameters(ours, 12)
    generator = torch.Generator().manual_seed(12)
    side = IMAGE_SIZE // 16
    args = (torch.randn(1, HIDDEN, side, side, generator=generator),
            torch.randn(1, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator))
    export_and_compare(ours, args, "memory encoder")


def test_memory_attention_with_full_fixed_slots_exports_and_matches_eager() -> None:
    # 256 px (16x16 grid) keeps the 7 full slots + 16 pointers cheap; the graph is the same at any size.
    image_size = 256
    _, ours = memory_attention_pair(image_size)
    side = image_size // 16
    inputs = memory_inputs(torch.Generator().manual_seed(13), 2, side, NUM_SLOTS, NUM_POINTERS)
    all_valid = torch.ones(inputs[2].shape[:2], dtype=torch.bool)
    some_valid = torch.stack([key_mask([0, 3, 4], [0, 1, 2], side * side, NUM_SLOTS, NUM_POINTERS),
                              key_mask([6], [15], side * side, NUM_SLOTS, NUM_POINTERS)])
    num_ptr_tokens = NUM_POINTERS * TOKENS_PER_POINTER
    with torch.no_grad():
        # Traced with every key valid (where eager skips the mask), the graph must still apply the mask.
        exported = torch.export.export(ours, (*inputs, num_ptr_tokens, all_valid)).module()
        for valid in (all_valid, some_valid):
            assert_matches(exported(*inputs, num_ptr_tokens, valid), ours(*inputs, num_ptr_tokens, valid),
                           "exported memory attention")

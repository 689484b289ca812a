"""Our EdgeTAMModel equals Meta's EdgeTAM (edgetam-dimos==1.0.1) component by component, fp32, seeded random
weights; its state_dict loads strictly and through the checkpoint path.

Meta's EdgeTAM runs in its own process (tests/edgetam_reference.py: its module is named `sam2`, like the
sam2==1.1.0 oracle of the other parity tests). It saves its state_dict, the inputs and its outputs; this
process loads them with torch.load(weights_only=True), copies the state_dict into ours and compares.
Tolerance: max |ours - Meta| <= 1e-4 * max(1, max |Meta|) (oracle.assert_matches), at 512 px, and at 1024 px
(Meta's own size) in the slow tier. Measured (2-core Xeon): trunk, neck, image features and perceiver bit-equal;
memory encoder 7.8e-7, memory attention 6.5e-7, decoder 1.2e-6.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, NamedTuple

import pytest
import torch

from edgetam_reference import REFERENCE_DIR, SCENE_FILLS
from testkit.oracle import assert_matches, memory_scene
from sam2_rt.modeling.config import MODEL_NAMES, get_config
from sam2_rt.modeling.edgetam import EdgeTAMModel
from sam2_rt.weights.checkpoint import CheckpointError, load_model, random_model, verify_state_dict

SEED = 0
# 512 px in the fast tier (Meta's side: ~20 s on 2 idle cores); Meta's own 1024 px in the slow tier.
SIZES = (512, pytest.param(1024, marks=pytest.mark.slow))


class Reference(NamedTuple):
    state_dict: Dict[str, torch.Tensor]
    inputs: Dict[str, torch.Tensor]
    outputs: Dict[str, torch.Tensor]


class Pair(NamedTuple):
    reference: Reference
    ours: EdgeTAMModel
    image_size: int


def run_reference(size: int, out: Path) -> Path:
    """Meta's EdgeTAM at one size in its own process; returns the file it saved."""
    if not (REFERENCE_DIR / "sam2" / "__init__.py").is_file():
        pytest.fail(f"Meta's EdgeTAM reference is not installed in {REFERENCE_DIR}: run `make setup`")
    script = Path(__file__).with_name("edgetam_reference.py")
    result = subprocess.run(
        [sys.executable, str(script), str(out), "--sizes", str(size), "--seed", str(SEED)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"EdgeTAM reference failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return out / f"edgetam_{size}.pt"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Pair]:
    """Meta's EdgeTAM and ours with its weights at a size, built once per size for the whole module."""

    @functools.lru_cache(maxsize=None)
    def build(size: int) -> Pair:
        path = run_reference(size, tmp_path_factory.mktemp(f"edgetam_reference_{size}"))
        content = torch.load(path, map_location="cpu", weights_only=True)
        reference = Reference(content["state_dict"], content["inputs"], content["outputs"])
        ours = EdgeTAMModel(get_config("edgetam", size))
        ours.load_state_dict(reference.state_dict, strict=True)
        return Pair(reference, ours.eval(), size)

    return build


@pytest.fixture(scope="module", params=SIZES, ids=lambda size: f"{size}px")
def pair(request: pytest.FixtureRequest, pairs: Callable[[int], Pair]) -> Pair:
    return pairs(request.param)


@pytest.fixture(scope="module")
def reference_512(pairs: Callable[[int], Pair]) -> Reference:
    """The 512 px reference, for the checkpoint tests (the weights do not depend on the image size)."""
    return pairs(512).reference


def test_trunk_and_neck_equal_meta(pair: Pair) -> None:
    image = pair.reference.inputs["image"]
    with torch.inference_mode():
        levels = pair.ours.image_encoder.trunk(image)
        neck = pair.ours.image_encoder.neck(levels)
    assert len(levels) == len(neck) == 4
    for index in range(4):
        assert_matches(levels[index], pair.reference.outputs[f"trunk.{index}"], f"trunk level {index}")
        assert_matches(neck[index], pair.reference.outputs[f"neck.{index}"], f"neck level {index}")


def test_forward_image_equals_meta(pair: Pair) -> None:
    with torch.inference_mode():
        features = pair.ours.forward_image(pair.reference.inputs["image"])
    side = pair.image_size // 16
    assert features[2].shape == (1, 256, side, side)
    for name, value in zip(("feat_s0", "feat_s1", "feat", "pos"), features):
        assert_matches(value, pair.reference.outputs[f"image.{name}"], name)


def test_perceiver_compresses_each_memory_to_512_tokens_like_meta(pair: Pair) -> None:
    inputs = pair.reference.inputs
    with torch.inference_mode():
        tokens, token_pos = pair.ours.spatial_perceiver(inputs["perceiver.feat"], inputs["perceiver.pos"])
    assert tokens.shape == token_pos.shape == (2, 512, 64)
    assert_matches(tokens, pair.reference.outputs["perceiver.tokens"], "perceiver tokens")
    assert_matches(token_pos, pair.reference.outputs["perceiver.pos"], "perceiver position encoding")


@pytest.mark.parametrize("from_points", [False, True], ids=["soft_mask", "clicked_mask"])
def test_memory_encoder_with_perceiver_equals_meta(pair: Pair, from_points: bool) -> None:
    inputs, outputs = pair.reference.inputs, pair.reference.outputs
    feat = outputs["image.feat"].expand(2, -1, -1, -1)
    with torch.inference_mode():
        memory, memory_pos = pair.ours.encode_memory(
            feat, inputs["memory.masks"], inputs["memory.object_score_logits"], is_mask_from_pts=from_points
        )
    assert memory.shape == (2, 512, 64)
    assert_matches(memory, outputs[f"memory.{from_points}.feat"], "memory features")
    assert_matches(memory_pos, outputs[f"memory.{from_points}.pos"], "memory position encoding")


@pytest.mark.parametrize("filled", SCENE_FILLS, ids=lambda filled: f"{filled}_of_7_slots")
def test_memory_attention_equals_meta(pair: Pair, filled: int) -> None:
    """Our fixed slots (shuffled, empty ones masked) against Meta's list of memories; a full memory also
    without a key mask (the steady state of a stream)."""
    outputs = pair.reference.outputs
    config = pair.ours.config
    scene = memory_scene(filled, SEED, config.feat_size, memory_tokens=config.memory_tokens)
    feat, pos = outputs["image.feat"], outputs["image.pos"]
    with torch.inference_mode():
        conditioned = pair.ours.attend_memory(feat, pos, *scene.slots)
    assert_matches(conditioned, outputs[f"attention.{filled}"], f"memory attention, {filled} slots")
    if filled == config.num_maskmem:
        # Every slot filled; only the filled pointer slots passed: nothing to mask.
        mem_feats, mem_pos, mem_tpos_index, _, ptrs, ptr_tpos, ptr_valid = scene.slots
        ptrs, ptr_tpos = ptrs[ptr_valid][None], ptr_tpos[ptr_valid][None]
        with torch.inference_mode():
            unmasked = pair.ours.attend_memory(feat, pos, mem_feats, mem_pos, mem_tpos_index, None, ptrs, ptr_tpos, None)
        assert_matches(unmasked, outputs[f"attention.{filled}"], "memory attention without a key mask")


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single_mask"])
def test_decoder_equals_meta(pair: Pair, multimask: bool) -> None:
    inputs, outputs = pair.reference.inputs, pair.reference.outputs
    feat = outputs["image.feat"].expand(2, -1, -1, -1)
    s0, s1 = (outputs[f"image.{name}"].expand(2, -1, -1, -1) for name in ("feat_s0", "feat_s1"))
    with torch.inference_mode():
        result = pair.ours.decode(
            pair.ours.no_memory_features(feat), s0, s1, inputs["decoder.coords"], inputs["decoder.labels"], None,
            multimask,
        )
    assert (result.object_score_logits > 0).all(), "the object-score bias should make both objects present"
    for name in ("low_res_multimasks", "ious", "low_res_masks", "high_res_masks", "obj_ptr", "object_score_logits"):
        assert_matches(getattr(result, name), outputs[f"decoder.{multimask}.{name}"], name)


# --------------------------------------------------------------------------- checkpoint path


def test_reference_file_loads_strictly_through_the_checkpoint_path(reference_512: Reference, tmp_path: Path) -> None:
    path = tmp_path / "edgetam.pt"
    torch.save({"model": reference_512.state_dict}, path)
    model = load_model("edgetam", path, image_size=512, manifest_path=tmp_path / "manifest.json")
    assert isinstance(model, EdgeTAMModel)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference_512.state_dict[key]), key
    with torch.inference_mode():
        feat = model.forward_image(reference_512.inputs["image"])[2]
    assert_matches(feat, reference_512.outputs["image.feat"], "feat after load_model")


def test_a_wrong_key_or_shape_is_refused_with_the_key_named(reference_512: Reference, tmp_path: Path) -> None:
    state = dict(reference_512.state_dict)
    state["spatial_perceiver.latents_extra"] = state.pop("spatial_perceiver.latents")
    with pytest.raises(CheckpointError) as error:
        verify_state_dict(state, "edgetam")
    assert "spatial_perceiver.latents" in str(error.value) and "spatial_perceiver.latents_extra" in str(error.value)

    state = dict(reference_512.state_dict)
    state["spatial_perceiver.latents_2d"] = torch.zeros(128, 64)
    path = tmp_path / "edgetam.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"spatial_perceiver\.latents_2d: file \[128, 64\] vs model \[256, 64\]"):
        load_model("edgetam", path, manifest_path=tmp_path / "manifest.json")


def test_an_edgetam_file_loaded_as_sam2_is_named_for_what_it_is(reference_512: Reference, tmp_path: Path) -> None:
    path = tmp_path / "edgetam.pt"
    torch.save({"model": reference_512.state_dict}, path)
    with pytest.raises(CheckpointError, match="The file is a edgetam checkpoint"):
        load_model("sam2_hiera_tiny", path, manifest_path=tmp_path / "manifest.json")


# --------------------------------------------------------------------------- config


def test_edgetam_config_and_random_model() -> None:
    config = get_config("edgetam")
    assert config.backbone_channel_list == (384, 192, 96, 48)
    assert config.mem_attn_num_layers == 2 and config.memory_tokens == 512
    # SAM 2's behaviour flags (configs/edgetam.yaml), not SAM 2.1's.
    assert not config.add_tpos_enc_to_obj_ptrs and not config.no_obj_embed_spatial
    model = random_model("edgetam", image_size=256)
    assert isinstance(model, EdgeTAMModel)
    assert model.obj_ptr_tpos_proj.__class__.__name__ == "Identity"
    with pytest.raises(ValueError, match="multiple of 256"):
        get_config("edgetam", 480)
    # Offered by every front end (the tracker drives it).
    assert "edgetam" in MODEL_NAMES

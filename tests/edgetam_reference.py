"""Meta's EdgeTAM (edgetam-dimos==1.0.1) as a test oracle, run in its own process.

Its top-level module is named ``sam2``, like Meta's sam2==1.1.0 that the other parity tests import, so it
lives in its own directory (``build/refs/edgetam``, installed by ``make setup``) and runs only here, as a
script, with that directory first on sys.path:

    python tests/edgetam_reference.py OUT_DIR --sizes 512 1024 --seed 0

For each size it builds Meta's EdgeTAM video model with seeded random weights (testkit/oracle.py's
randomize_parameters, plus random BatchNorm statistics for the RepViT trunk), feeds every component fixed
random inputs and saves ``OUT_DIR/edgetam_<size>.pt``: {"state_dict", "inputs", "outputs"} (tensors only, so
the test process reads it with torch.load(weights_only=True)). tests/test_edgetam_parity.py loads that
state_dict strictly into our EdgeTAMModel and compares.

The RepViT trunk comes from timm, which Meta's code asks for with pretrained=True (a download that cannot
happen here): testkit/edgetam_reference.py's build_predictor builds it with pretrained=False.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "build" / "refs" / "edgetam"
# Object-score head bias that makes the decoder predict "present" (see oracle.set_object_score_bias).
PRESENT_BIAS = 8.0
# Memory-attention scenes: slots filled (3 of 7: empty slots masked; 7: the full memory of a steady stream).
SCENE_FILLS = (3, 7)


def seq_first(x):
    """(B, C, h, w) -> (h*w, B, C), Meta's layout of vision features."""
    return x.flatten(2).permute(2, 0, 1)


def build_reference(image_size: int, seed: int):
    """Meta's EdgeTAM video predictor at image_size, seeded random weights, eval, CPU (built offline and with
    random BatchNorm statistics by testkit/edgetam_reference.py, shared with the tracking oracle)."""
    import torch

    from testkit.edgetam_reference import build_predictor, randomize_batchnorm_statistics
    from testkit.oracle import randomize_parameters, set_object_score_bias

    torch.manual_seed(seed)
    model = build_predictor(image_size)
    randomize_parameters(model, seed)
    randomize_batchnorm_statistics(model, seed + 1)
    set_object_score_bias(model, PRESENT_BIAS)
    return model.eval()


def reference_outputs(model, image_size: int, seed: int) -> Dict[str, object]:
    """Inputs and Meta's outputs of every component (see the module doc)."""
    import torch

    from testkit.oracle import memory_scene, meta_memory_attention

    side = image_size // 16
    generator = torch.Generator().manual_seed(seed + 2)
    inputs: Dict[str, torch.Tensor] = {}
    outputs: Dict[str, torch.Tensor] = {}
    inputs["image"] = torch.randn(1, 3, image_size, image_size, generator=generator)
    with torch.inference_mode():
        levels: List[torch.Tensor] = model.image_encoder.trunk(inputs["image"])
        for index, level in enumerate(levels):
            outputs[f"trunk.{index}"] = level
        neck_levels, _ = model.image_encoder.neck(levels)
        for index, level in enumerate(neck_levels):
            outputs[f"neck.{index}"] = level
        backbone = model.forward_image(inputs["image"])
        feat_s0, feat_s1, feat = backbone["backbone_fpn"]
        pos = backbone["vision_pos_enc"][-1]
        for name, value in zip(("feat_s0", "feat_s1", "feat", "pos"), (feat_s0, feat_s1, feat, pos)):
            outputs[f"image.{name}"] = value

        # Perceiver alone, on random maps and position encodings of two memories.
        inputs["perceiver.feat"] = torch.randn(2, 64, side, side, generator=generator)
        inputs["perceiver.pos"] = torch.randn(2, 64, side, side, generator=generator)
        # Meta's perceiver takes one memory at a time (its 2-D path views an expanded tensor): one call each.
        per_memory = [model.spatial_perceiver(inputs["perceiver.feat"][i : i + 1], inputs["perceiver.pos"][i : i + 1])
                      for i in range(2)]
        outputs["perceiver.tokens"] = torch.cat([tokens for tokens, _ in per_memory])
        outputs["perceiver.pos"] = torch.cat([token_pos for _, token_pos in per_memory])

        # Memory encoder (+ perceiver): two objects, one predicted absent, soft and clicked masks.
        # (one object per call, as Meta's perceiver needs).
        inputs["memory.masks"] = 4.0 * torch.randn(2, 1, image_size, image_size, generator=generator)
        inputs["memory.object_score_logits"] = torch.tensor([[3.0], [-2.0]])
        for from_points in (False, True):
            per_object = [
                model._encode_new_memory(
                    current_vision_feats=[seq_first(feat)],
                    feat_sizes=[(side, side)],
                    pred_masks_high_res=inputs["memory.masks"][i : i + 1],
                    object_score_logits=inputs["memory.object_score_logits"][i : i + 1],
                    is_mask_from_pts=from_points,
                )
                for i in range(2)
            ]
            outputs[f"memory.{from_points}.feat"] = torch.cat([memory for memory, _ in per_object])
            outputs[f"memory.{from_points}.pos"] = torch.cat([memory_pos[0] for _, memory_pos in per_object])

        # Memory attention over a partly and a fully filled memory (scenes rebuilt by the test from the seed).
        for filled in SCENE_FILLS:
            scene = memory_scene(filled, seed, side, memory_tokens=model.spatial_perceiver.num_latents
                                 + model.spatial_perceiver.num_latents_2d)
            outputs[f"attention.{filled}"] = meta_memory_attention(model, feat, pos, scene)

        # Decoder: two objects, clicks (multimask and single) on the memory-free feature.
        inputs["decoder.coords"] = torch.rand(2, 2, 2, generator=generator) * image_size
        inputs["decoder.labels"] = torch.tensor([[1, 0], [1, 1]], dtype=torch.int32)
        two = feat.expand(2, -1, -1, -1).contiguous()
        s0, s1 = (x.expand(2, -1, -1, -1).contiguous() for x in (feat_s0, feat_s1))
        for multimask in (True, False):
            heads = model._forward_sam_heads(
                backbone_features=two + model.no_mem_embed.reshape(1, -1, 1, 1),
                point_inputs={"point_coords": inputs["decoder.coords"], "point_labels": inputs["decoder.labels"]},
                mask_inputs=None,
                high_res_features=[s0, s1],
                multimask_output=multimask,
            )
            names = ("low_res_multimasks", None, "ious", "low_res_masks", "high_res_masks", "obj_ptr",
                     "object_score_logits")
            for name, value in zip(names, heads):
                if name is not None:  # the high-res candidates: their low-res source is compared
                    outputs[f"decoder.{multimask}.{name}"] = value

        # A click on an initial conditioning frame through Meta's track_step, memory encoding included (for
        # bench/parity.py's image_predict).
        inputs["predict.coords"] = torch.tensor([[[0.3 * image_size, 0.6 * image_size]]])
        inputs["predict.labels"] = torch.tensor([[1]], dtype=torch.int32)
        _, feats, pos_embeds, sizes = model._prepare_backbone_features(backbone)
        out = model.track_step(
            frame_idx=0, is_init_cond_frame=True, current_vision_feats=feats, current_vision_pos_embeds=pos_embeds,
            feat_sizes=sizes, point_inputs={"point_coords": inputs["predict.coords"],
                                            "point_labels": inputs["predict.labels"]},
            mask_inputs=None, output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}, num_frames=1,
        )
        for name in ("pred_masks", "pred_masks_high_res", "obj_ptr", "object_score_logits", "maskmem_features"):
            outputs[f"predict.{name}"] = out[name]
        outputs["predict.maskmem_pos_enc"] = out["maskmem_pos_enc"][-1]
    return {"state_dict": model.state_dict(), "inputs": inputs, "outputs": outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (REFERENCE_DIR / "sam2" / "__init__.py").is_file():
        sys.exit(f"EdgeTAM reference not installed in {REFERENCE_DIR}: run `make setup`")
    # Meta's EdgeTAM first, then the repository (testkit.oracle); never sam2==1.1.0 from site-packages.
    sys.path[:0] = [str(REFERENCE_DIR), str(REPO)]
    import torch
    import sam2

    if Path(sam2.__file__).resolve().parent != (REFERENCE_DIR / "sam2").resolve():
        sys.exit(f"imported {sam2.__file__}, not the EdgeTAM reference in {REFERENCE_DIR}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        model = build_reference(size, args.seed)
        torch.save(reference_outputs(model, size, args.seed), args.out_dir / f"edgetam_{size}.pt")


if __name__ == "__main__":
    main()

"""Numerical parity of our SAM 2 with Meta's (sam2==1.1.0), per component and for the whole image path.

Both models get the same seeded random weights (Meta's state_dict copied into ours, strict), fp32 on CPU,
and identical random inputs. The object-score bias is set so objects are present (otherwise every mask
logit is -1024 and hides differences; see testkit/oracle.py). One JSON line per component:

    {"component": ..., "image_size": ..., "max_abs_diff": ..., "ref_max_abs": ...}

max_abs_diff and ref_max_abs are the maxima over every output tensor of the component. The tolerance of
the tests is max_abs_diff <= 1e-4 * max(1, ref_max_abs) for each tensor; the exit status is 1 when any
tensor exceeds it.

Components: image_encoder (forward_image), prompt_decoder (click with multimask, clicks with negatives,
box + click, mask prompt), memory_encoder (mask from clicks and tracked), memory_attention (1, 4 and 7
filled memory slots with pointers), image_predict (an image and a click through Meta's track_step on an
initial conditioning frame, memory encoding included, against forward_image -> no_memory_features ->
decode -> encode_memory).

    python bench/parity.py --model sam2.1_hiera_tiny --image-size 512 --component all

`--model edgetam` compares with Meta's EdgeTAM (edgetam-dimos, build/refs/edgetam), which runs in its own process
(tests/edgetam_reference.py; see EdgeTAMBench): the same components and JSON lines, with EdgeTAM's own inputs
(prompt_decoder: multimask and single-mask clicks of two objects; memory_encoder: the perceiver alone, then the
encoder and perceiver; memory_attention: 3 and 7 filled slots). Its image size is a multiple of 256.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository root, for testkit
    sys.path.insert(0, str(REPO))
from testkit.oracle import (  # noqa: E402
    build_meta,
    build_ours_from_meta,
    memory_scene,
    meta_memory_attention,
    set_object_score_bias,
)

from sam2_rt.modeling.config import EDGETAM_NAME, MODEL_NAMES, get_config  # noqa: E402
from sam2_rt.modeling.factory import create_model  # noqa: E402
from sam2_rt.modeling.sam2 import SAM2Model  # noqa: E402

COMPONENTS = ("image_encoder", "prompt_decoder", "memory_encoder", "memory_attention", "image_predict")
PRESENT_BIAS = 8.0
Pairs = List[Tuple[torch.Tensor, torch.Tensor]]  # (Meta's tensor, ours)


def seq_first(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (h*w, B, C), Meta's layout of vision features."""
    return x.flatten(2).permute(2, 0, 1)


class Bench:
    """Meta's model, ours, and shared random inputs at one image size."""

    def __init__(self, model_name: str, image_size: int, seed: int) -> None:
        self.meta = build_meta(model_name, image_size, seed)
        set_object_score_bias(self.meta, PRESENT_BIAS)
        self.ours: SAM2Model = build_ours_from_meta(self.meta)
        self.size = image_size
        self.feat_size = image_size // 16
        self.generator = torch.Generator().manual_seed(seed + 1)
        image = self.randn(1, 3, image_size, image_size)
        with torch.inference_mode():
            backbone = self.meta.forward_image(image)
        self.image = image
        self.feat_s0, self.feat_s1, self.feat = backbone["backbone_fpn"]
        self.pos = backbone["vision_pos_enc"][-1]

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator)

    def image_encoder(self) -> Pairs:
        image = self.randn(1, 3, self.size, self.size)
        with torch.inference_mode():
            backbone = self.meta.forward_image(image)
            ours = self.ours.forward_image(image)
        return list(zip(backbone["backbone_fpn"] + [backbone["vision_pos_enc"][-1]], ours))

    def prompt_decoder(self) -> Pairs:
        s = self.size
        cases = [
            (torch.tensor([[[0.2 * s, 0.4 * s]]]), torch.tensor([[1]], dtype=torch.int32), None, True),
            (torch.rand((1, 4, 2), generator=self.generator) * s, torch.tensor([[1, 0, 1, 0]], dtype=torch.int32),
             None, False),
            (torch.tensor([[[0.1 * s, 0.1 * s], [0.6 * s, 0.7 * s], [0.3 * s, 0.3 * s]]]),
             torch.tensor([[2, 3, 1]], dtype=torch.int32), None, False),
            (None, None, 6 * self.randn(1, 1, s // 4, s // 4), False),
        ]
        pairs: Pairs = []
        high_res = [self.feat_s0, self.feat_s1]
        feat = self.ours.no_memory_features(self.feat)
        for coords, labels, mask, multimask in cases:
            points = None if coords is None else {"point_coords": coords, "point_labels": labels}
            with torch.inference_mode():
                ref = self.meta._forward_sam_heads(feat, points, mask, high_res, multimask)
                out = self.ours.decode(feat, self.feat_s0, self.feat_s1, coords, labels, mask, multimask)
            pairs += list(zip((ref[0], ref[2], ref[3], ref[4], ref[5], ref[6]), out))
        return pairs

    def memory_encoder(self) -> Pairs:
        masks = 10 * self.randn(2, 1, self.size, self.size)
        scores = torch.tensor([[3.0], [-2.0]])
        feat = self.feat.expand(2, -1, -1, -1)
        pairs: Pairs = []
        for from_points in (True, False):
            with torch.inference_mode():
                ref_feat, ref_pos = self.meta._encode_new_memory(
                    [seq_first(feat)], [(self.feat_size, self.feat_size)], masks, scores, from_points
                )
                out_feat, out_pos = self.ours.encode_memory(feat, masks, scores, from_points)
            pairs += [(ref_feat, out_feat), (ref_pos[-1], out_pos)]
        return pairs

    def memory_attention(self) -> Pairs:
        pairs: Pairs = []
        config = self.ours.config
        for filled in (1, 4, config.num_maskmem):
            scene = memory_scene(
                filled, seed=filled, feat_size=self.feat_size, num_maskmem=config.num_maskmem,
                num_ptr_slots=config.max_obj_ptrs_in_encoder, mem_dim=config.mem_dim, hidden_dim=config.hidden_dim,
            )
            ref = meta_memory_attention(self.meta, self.feat, self.pos, scene)
            with torch.inference_mode():
                out = self.ours.attend_memory(self.feat, self.pos, *scene.slots)
            pairs.append((ref, out))
        return pairs

    def image_predict(self) -> Pairs:
        coords = torch.tensor([[[0.3 * self.size, 0.6 * self.size]]])
        labels = torch.tensor([[1]], dtype=torch.int32)
        with torch.inference_mode():
            backbone = self.meta.forward_image(self.image)
            _, feats, pos, sizes = self.meta._prepare_backbone_features(backbone)
            ref = self.meta.track_step(
                frame_idx=0, is_init_cond_frame=True, current_vision_feats=feats, current_vision_pos_embeds=pos,
                feat_sizes=sizes, point_inputs={"point_coords": coords, "point_labels": labels}, mask_inputs=None,
                output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}, num_frames=1,
            )
            feat_s0, feat_s1, feat, _ = self.ours.forward_image(self.image)
            multimask = self.ours.use_multimask(is_init_cond_frame=True, num_points=1)
            decoded = self.ours.decode(
                self.ours.no_memory_features(feat), feat_s0, feat_s1, coords, labels, None, multimask
            )
            mem_feat, mem_pos = self.ours.encode_memory(
                feat, decoded.high_res_masks, decoded.object_score_logits, is_mask_from_pts=True
            )
        return [
            (ref["pred_masks"], decoded.low_res_masks),
            (ref["pred_masks_high_res"], decoded.high_res_masks),
            (ref["obj_ptr"], decoded.obj_ptr),
            (ref["object_score_logits"], decoded.object_score_logits),
            (ref["maskmem_features"], mem_feat),
            (ref["maskmem_pos_enc"][-1], mem_pos),
        ]


class EdgeTAMBench:
    """Meta's EdgeTAM (edgetam-dimos) outputs and ours with its weights at one image size.

    Meta's EdgeTAM is a package named `sam2` too, so it cannot run beside sam2==1.1.0: tests/edgetam_reference.py
    builds it with seeded random weights in its own process, runs every component on its random inputs and saves
    its state_dict, inputs and outputs; ours loads that state_dict (strict) and runs the same inputs here."""

    def __init__(self, image_size: int, seed: int) -> None:
        script = REPO / "tests" / "edgetam_reference.py"
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, str(script), folder, "--sizes", str(image_size), "--seed", str(seed)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"EdgeTAM's reference failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            content = torch.load(Path(folder) / f"edgetam_{image_size}.pt", map_location="cpu", weights_only=True)
        self.ours = create_model(get_config(EDGETAM_NAME, image_size))
        self.ours.load_state_dict(content["state_dict"], strict=True)
        self.ours.eval()
        self.inputs, self.outputs = content["inputs"], content["outputs"]
        self.seed = seed

    def image_encoder(self) -> Pairs:
        with torch.inference_mode():
            ours = self.ours.forward_image(self.inputs["image"])
        names = ("feat_s0", "feat_s1", "feat", "pos")
        return [(self.outputs[f"image.{name}"], value) for name, value in zip(names, ours)]

    def prompt_decoder(self) -> Pairs:
        feat, s0, s1 = (self.outputs[f"image.{name}"].expand(2, -1, -1, -1) for name in ("feat", "feat_s0", "feat_s1"))
        names = ("low_res_multimasks", "ious", "low_res_masks", "high_res_masks", "obj_ptr", "object_score_logits")
        pairs: Pairs = []
        for multimask in (True, False):
            with torch.inference_mode():
                out = self.ours.decode(self.ours.no_memory_features(feat), s0, s1, self.inputs["decoder.coords"],
                                       self.inputs["decoder.labels"], None, multimask)
            pairs += [(self.outputs[f"decoder.{multimask}.{name}"], getattr(out, name)) for name in names]
        return pairs

    def memory_encoder(self) -> Pairs:
        """The perceiver alone, then the memory encoder and perceiver on clicked and tracked masks."""
        inputs, outputs = self.inputs, self.outputs
        feat = outputs["image.feat"].expand(2, -1, -1, -1)
        with torch.inference_mode():
            tokens, token_pos = self.ours.spatial_perceiver(inputs["perceiver.feat"], inputs["perceiver.pos"])
            pairs: Pairs = [(outputs["perceiver.tokens"], tokens), (outputs["perceiver.pos"], token_pos)]
            for from_points in (True, False):
                memory, memory_pos = self.ours.encode_memory(feat, inputs["memory.masks"],
                                                             inputs["memory.object_score_logits"], from_points)
                pairs += [(outputs[f"memory.{from_points}.feat"], memory), (outputs[f"memory.{from_points}.pos"],
                                                                            memory_pos)]
        return pairs

    def memory_attention(self) -> Pairs:
        config = self.ours.config
        fills = sorted(int(key.split(".")[1]) for key in self.outputs if key.startswith("attention."))
        pairs: Pairs = []
        for filled in fills:
            scene = memory_scene(filled, self.seed, config.feat_size, memory_tokens=config.memory_tokens)
            with torch.inference_mode():
                out = self.ours.attend_memory(self.outputs["image.feat"], self.outputs["image.pos"], *scene.slots)
            pairs.append((self.outputs[f"attention.{filled}"], out))
        return pairs

    def image_predict(self) -> Pairs:
        coords, labels = self.inputs["predict.coords"], self.inputs["predict.labels"]
        with torch.inference_mode():
            feat_s0, feat_s1, feat, _ = self.ours.forward_image(self.inputs["image"])
            multimask = self.ours.use_multimask(is_init_cond_frame=True, num_points=1)
            decoded = self.ours.decode(self.ours.no_memory_features(feat), feat_s0, feat_s1, coords, labels, None,
                                       multimask)
            mem_feat, mem_pos = self.ours.encode_memory(feat, decoded.high_res_masks, decoded.object_score_logits,
                                                        is_mask_from_pts=True)
        ours = (decoded.low_res_masks, decoded.high_res_masks, decoded.obj_ptr, decoded.object_score_logits,
                mem_feat, mem_pos)
        names = ("pred_masks", "pred_masks_high_res", "obj_ptr", "object_score_logits", "maskmem_features",
                 "maskmem_pos_enc")
        return [(self.outputs[f"predict.{name}"], value) for name, value in zip(names, ours)]


def summarise(component: str, image_size: int, pairs: Pairs) -> Tuple[Dict[str, object], bool]:
    """The JSON record of a component and whether every tensor is within tolerance."""
    diffs, refs, within = [], [], True
    for ref, ours in pairs:
        if ref.shape != ours.shape:
            raise AssertionError(f"{component}: shape {tuple(ours.shape)} != Meta's {tuple(ref.shape)}")
        diff = (ours.float() - ref.float()).abs().max().item()
        ref_max = ref.float().abs().max().item()
        within = within and diff <= 1e-4 * max(1.0, ref_max)
        diffs.append(diff)
        refs.append(ref_max)
    record = {"component": component, "image_size": image_size, "max_abs_diff": max(diffs),
              "ref_max_abs": max(refs)}
    return record, within


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=MODEL_NAMES)
    parser.add_argument("--image-size", type=int, default=512, help="model input side, a multiple of 32")
    parser.add_argument("--component", default="all", choices=("all",) + COMPONENTS)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    args = parser.parse_args(argv)

    bench = EdgeTAMBench(args.image_size, args.seed) if args.model == EDGETAM_NAME else Bench(
        args.model, args.image_size, args.seed)
    selected = COMPONENTS if args.component == "all" else (args.component,)
    runs: Dict[str, Callable[[], Pairs]] = {name: getattr(bench, name) for name in COMPONENTS}
    all_within = True
    for component in selected:
        record, within = summarise(component, args.image_size, runs[component]())
        all_within = all_within and within
        print(json.dumps(record), flush=True)
    return 0 if all_within else 1


if __name__ == "__main__":
    sys.exit(main())

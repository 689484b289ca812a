"""Meta's EdgeTAM video predictor (edgetam-dimos==1.0.1, unpacked into build/refs/edgetam by `make setup`) as a
test oracle, run in its own process: its module is named `sam2`, like Meta's sam2==1.1.0 in site-packages, so this
script puts build/refs/edgetam first on sys.path and never imports the other one.

    python testkit/edgetam_reference.py IN OUT

IN (torch.save): {"state_dict": weights under Meta's names (our EdgeTAMModel's keys equal them), "image_size": S,
"images": (T, 3, S, S) float frames as our tracker preprocessed them, "frame_size": (H, W), "point": (x, y) one
click on frame 0 for object 1}. Meta's EdgeTAM predictor tracks one object at a time correctly (batches of several
fail), and only from the frames given: run it once per object, on the frames from the one that object is added on.
OUT: {"logits": (T, H, W) float32 mask logits at the frame's size, "object_scores": (T,) object score logits,
"seconds": wall seconds per frame}. It prints what Meta's code prints (its business).

Shared with tests/edgetam_reference.py (the component oracle): `build_predictor`, Meta's EdgeTAM built offline
(its RepViT trunk comes from timm, which Meta's code asks for with pretrained=True, a download that cannot happen
here: timm's create_model is wrapped to build it with pretrained=False), and `randomize_batchnorm_statistics`.
`seeded_edgetam` is our EdgeTAMModel with the seeded random weights the tracking comparisons share with it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "build" / "refs" / "edgetam"
CONFIG = "configs/edgetam.yaml"


def randomize_batchnorm_statistics(model: Any, seed: int) -> None:
    """Redraw the running statistics of every BatchNorm2d (RepViT's) from a generator seeded with seed, in module
    order: mean 0.1 * N(0, 1), variance 0.5 + U(0, 1) (the defaults 0 and 1 would hide a missing normalisation)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))


def seeded_edgetam(image_size: int, seed: int = 0) -> Any:
    """Our EdgeTAMModel with testkit.oracle's seeded random weights, objects present (present_objects_model) and
    random BatchNorm statistics; in eval mode. Its state_dict, taken before a Tracker folds its RepViT trunk (in
    place: other keys), is what the reference gets."""
    from testkit.oracle import present_objects_model

    model = present_objects_model(image_size, "edgetam", seed)
    randomize_batchnorm_statistics(model, seed + 1)
    return model.eval()


def build_predictor(image_size: int) -> Any:
    """Meta's EdgeTAM SAM2VideoPredictor at image_size (its initial weights), CPU, eval, no hole filling. Must run
    with build/refs/edgetam first on sys.path."""
    import timm

    import sam2.modeling.backbones.timm as timm_backbone
    from sam2.build_sam import build_sam2_video_predictor

    def create_model_offline(*args: Any, **kwargs: Any) -> Any:
        kwargs["pretrained"] = False
        return timm.create_model(*args, **kwargs)

    timm_backbone.create_model = create_model_offline
    side = image_size // 16
    overrides = [
        f"++model.image_size={image_size}",
        "++model.fill_hole_area=0",
        # Meta's cross-attention tables are fixed to the 64 x 64 query grid of 1024 px.
        f"++model.memory_attention.layer.cross_attention.q_sizes=[{side},{side}]",
    ]
    predictor = build_sam2_video_predictor(CONFIG, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)
    predictor.fill_hole_area = 0  # its post-processing overrides come last; hole filling needs its CUDA extension
    return predictor.eval()


def run(inputs: Dict[str, Any]) -> Dict[str, Any]:
    """Meta's predictor on inputs (see the module doc); one object, clicked on frame 0, propagated to the end."""
    import torch
    from PIL import Image

    predictor = build_predictor(int(inputs["image_size"]))
    predictor.load_state_dict(inputs["state_dict"], strict=True)
    images = inputs["images"]
    with tempfile.TemporaryDirectory() as folder:
        Image.new("RGB", (8, 8)).save(Path(folder) / "00000.jpg")
        state = predictor.init_state(folder)
    state["images"] = images
    state["num_frames"] = images.shape[0]
    state["video_height"], state["video_width"] = inputs["frame_size"]
    state["cached_features"] = {}

    def object_score(frame_idx: int) -> torch.Tensor:
        outputs = state["output_dict"]
        out = outputs["cond_frame_outputs"].get(frame_idx) or outputs["non_cond_frame_outputs"][frame_idx]
        return out["object_score_logits"].reshape(())

    x, y = inputs["point"]
    start = time.perf_counter()
    _, _, first = predictor.add_new_points_or_box(state, 0, 1, points=[[x, y]], labels=[1])
    logits, seconds = {0: first[0, 0]}, {0: time.perf_counter() - start}
    start = time.perf_counter()
    for frame_idx, ids, masks in predictor.propagate_in_video(state, start_frame_idx=0):
        assert list(ids) == [1], ids
        logits[frame_idx] = masks[0, 0]  # frame 0 again: its consolidated output (the same logits)
        seconds[frame_idx] = seconds.get(frame_idx, 0.0) + time.perf_counter() - start
        start = time.perf_counter()
    frames = range(images.shape[0])
    return {"logits": torch.stack([logits[t] for t in frames]).float(),
            "object_scores": torch.stack([object_score(t) for t in frames]).float(),
            "seconds": [seconds[t] for t in frames]}


def run_in_own_process(inputs: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    """`run` in a child process (this file as a script); raises RuntimeError with its output if it fails."""
    from testkit.own_process import run_script

    return run_script(__file__, "EdgeTAM", inputs, folder)


def use_reference_package() -> None:
    """Put Meta's EdgeTAM first on sys.path (then the repository, for testkit) and check that `sam2` is it; exits
    with a message when it is not installed or another `sam2` was imported already."""
    if not (REFERENCE_DIR / "sam2" / "__init__.py").is_file():
        sys.exit(f"Meta's EdgeTAM reference not in {REFERENCE_DIR}: run `make setup`")
    sys.path[:0] = [str(REFERENCE_DIR), str(REPO)]
    import sam2

    if Path(sam2.__file__).resolve().parent != (REFERENCE_DIR / "sam2").resolve():
        sys.exit(f"imported {sam2.__file__}, not Meta's EdgeTAM reference in {REFERENCE_DIR}")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    use_reference_package()
    import torch

    torch.save(run(torch.load(sys.argv[1], weights_only=False)), sys.argv[2])


if __name__ == "__main__":
    main()

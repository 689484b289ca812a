"""SAMURAI's video predictor (absolutely-not-samurai==1.0.0, unpacked into build/refs/samurai by `make setup`) as
a test oracle, run in its own process: its module is named `sam2`, like Meta's sam2==1.1.0 in site-packages, so
this script puts build/refs/samurai first on sys.path and never imports the other one.

    python testkit/samurai_reference.py IN OUT

IN (torch.save): {"state_dict": weights under Meta's names, "image_size": S, "images": (T, 3, S, S) float frames as
our tracker preprocessed them, "frame_size": (H, W), "point": (x, y) one click on frame 0 for object 1,
"memory_bank_iou_threshold": SAMURAI's memory threshold}.
OUT: {"logits": (T, H, W) float32 mask logits at the frame's size, "seconds": wall seconds per frame, "best": {frame: chosen candidate index} of every
decode with candidates, "memory": {frame: sorted frame indices of the non-conditioning spatial memories the frame
attended to}}. It prints what SAMURAI prints (its business).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "build" / "refs" / "samurai"
CONFIG = "configs/samurai/sam2.1_hiera_t.yaml"


def run(inputs: Dict[str, Any]) -> Dict[str, Any]:
    import torch
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    size = int(inputs["image_size"])
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "weights.pt"
        torch.save({"model": inputs["state_dict"]}, checkpoint)
        predictor = build_sam2_video_predictor(
            CONFIG, ckpt_path=str(checkpoint), device="cpu",
            hydra_overrides_extra=[f"++model.image_size={size}",
                                   f"++model.memory_bank_iou_threshold={inputs['memory_bank_iou_threshold']}"],
        )
        predictor.fill_hole_area = 0  # its hole filling needs the CUDA extension; ours never fills
        Image.new("RGB", (8, 8)).save(Path(folder) / "00000.jpg")
        state = predictor.init_state(folder)
    images = inputs["images"]
    state["images"] = images
    state["num_frames"] = images.shape[0]
    state["video_height"], state["video_width"] = inputs["frame_size"]
    state["cached_features"] = {}

    current = {"frame": -1}
    best: Dict[int, int] = {}
    memories: Dict[int, Any] = {}
    track_step, heads, attention = predictor.track_step, predictor._forward_sam_heads, predictor.memory_attention.forward

    def on_track_step(frame_idx: int, *args: Any, **kwargs: Any) -> Any:
        current["frame"] = frame_idx
        return track_step(frame_idx, *args, **kwargs)

    def on_heads(*args: Any, **kwargs: Any) -> Any:
        out = heads(*args, **kwargs)
        multimasks, chosen = out[0], out[3]
        if multimasks.shape[1] > 1:
            best[current["frame"]] = next(k for k in range(multimasks.shape[1])
                                          if torch.equal(multimasks[:, k:k + 1], chosen))
        return out

    def on_attention(*args: Any, **kwargs: Any) -> Any:
        memory, pointers = kwargs["memory"], kwargs.get("num_obj_ptr_tokens", 0)
        memories[current["frame"]] = memory[: memory.shape[0] - pointers, 0].clone()
        return attention(*args, **kwargs)

    predictor.track_step, predictor._forward_sam_heads = on_track_step, on_heads
    predictor.memory_attention.forward = on_attention
    x, y = inputs["point"]
    start = time.perf_counter()
    _, _, first = predictor.add_new_points_or_box(state, 0, 1, points=[[x, y]], labels=[1])
    logits, seconds = {0: first[0, 0]}, {0: time.perf_counter() - start}
    start = time.perf_counter()
    for frame_idx, _, masks in predictor.propagate_in_video(state, start_frame_idx=0):
        logits[frame_idx] = masks[0, 0]
        seconds[frame_idx] = seconds.get(frame_idx, 0.0) + time.perf_counter() - start
        start = time.perf_counter()
    frames = range(images.shape[0])
    return {"logits": torch.stack([logits[t] for t in frames]).float(), "seconds": [seconds[t] for t in frames],
            "best": best, "memory": {frame: _frames_of(chunks, state) for frame, chunks in memories.items()}}


def _frames_of(tokens: Any, state: Dict[str, Any]) -> List[int]:
    """The non-conditioning frames whose stored memory features make up `tokens` ((M * h * w, 64): the spatial
    memory a frame attended to, slot after slot)."""
    import torch

    outputs = state["output_dict"]["non_cond_frame_outputs"]
    found = []
    for frame, out in outputs.items():
        features = out["maskmem_features"][0].flatten(1).transpose(0, 1).to(tokens.dtype)  # (h * w, 64)
        size = features.shape[0]
        for start in range(0, tokens.shape[0], size):
            if torch.equal(tokens[start:start + size], features):
                found.append(frame)
                break
    return sorted(found)


def run_in_own_process(inputs: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    """`run` in a child process (this file as a script); raises RuntimeError with its output if it fails."""
    from testkit.own_process import run_script

    return run_script(__file__, "SAMURAI", inputs, folder)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    if not (REFERENCE_DIR / "sam2" / "__init__.py").is_file():
        sys.exit(f"SAMURAI's reference not in {REFERENCE_DIR}: run `make setup`")
    sys.path[:0] = [str(REFERENCE_DIR)]
    import sam2
    import torch

    if Path(sam2.__file__).resolve().parent != (REFERENCE_DIR / "sam2").resolve():
        sys.exit(f"imported {sam2.__file__}, not SAMURAI's reference in {REFERENCE_DIR}")
    torch.save(run(torch.load(sys.argv[1], weights_only=False)), sys.argv[2])


if __name__ == "__main__":
    main()

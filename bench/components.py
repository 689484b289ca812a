"""Per-component CPU latency of our SAM 2 against Meta's (sam2==1.1.0), in the same run.

Both models get the same seeded random weights (Meta's state_dict copied into ours) and the same inputs;
fp32, default torch threads, torch.inference_mode. Each component is warmed up, then timed `--repeats`
times, alternating Meta and ours so that load from other processes hits both alike; the median is
reported. One JSON line per component:

    {"component": ..., "image_size": ..., "ours_ms": ..., "meta_ms": ..., "ratio": ours_ms / meta_ms}

Components: image_encoder (forward_image, high-res projections included), prompt_encoder+mask_decoder
(one click, multimask, as SAM2Base calls them), memory_encoder (one frame), memory_attention (all
num_maskmem slots and max_obj_ptrs_in_encoder pointers filled; ours gets its key mask, all True).

    python bench/components.py --model sam2.1_hiera_tiny --image-size 1024 --repeats 5

EdgeTAM (`--model edgetam`): Meta's sam2 package has no EdgeTAM, so ours is timed alone (same seeded weights
scheme, testkit.oracle.seeded_model): "meta_ms" and "ratio" are null and "compared" says so. Its memory encoder
includes the spatial perceiver, and memory attention reads 512-token memories (config.memory_tokens).

    python bench/components.py --model edgetam --image-size 1024 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository root, for testkit
    sys.path.insert(0, str(REPO))
from testkit.oracle import META_YAML, build_meta, build_ours_from_meta, seeded_model  # noqa: E402

from sam2_rt.modeling.config import MODEL_NAMES  # noqa: E402

Call = Callable[[], object]


def time_pair(meta_call: Call, our_call: Call, repeats: int, warmup: int) -> Tuple[float, float]:
    """Median milliseconds of each call, alternating which runs first in each round."""
    for _ in range(warmup):
        meta_call()
        our_call()
    times: Dict[str, List[float]] = {"meta": [], "ours": []}
    for round_index in range(repeats):
        order = [("meta", meta_call), ("ours", our_call)]
        if round_index % 2:
            order.reverse()
        for name, call in order:
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return statistics.median(times["ours"]), statistics.median(times["meta"])


def time_alone(our_call: Call, repeats: int, warmup: int) -> float:
    """Median milliseconds of our call alone (a model Meta's sam2 does not have)."""
    for _ in range(warmup):
        our_call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        our_call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def component_calls(meta: Optional[torch.nn.Module], ours: torch.nn.Module, image_size: int, seed: int
                    ) -> Iterator[Tuple[str, Optional[Call], Call]]:
    """(name, Meta's call, our call) per component, with identical inputs (batch 1); Meta's call is None
    without a Meta model (EdgeTAM)."""
    generator = torch.Generator().manual_seed(seed)
    config = ours.config
    side = image_size // config.backbone_stride
    hidden, mem_dim = config.hidden_dim, config.mem_dim

    image = torch.randn(1, 3, image_size, image_size, generator=generator)
    yield "image_encoder", meta and (lambda: meta.forward_image(image)), lambda: ours.forward_image(image)

    feat = torch.randn(1, hidden, side, side, generator=generator)
    feat_s0 = torch.randn(1, hidden // 8, 4 * side, 4 * side, generator=generator)
    feat_s1 = torch.randn(1, hidden // 4, 2 * side, 2 * side, generator=generator)
    coords = torch.rand(1, 1, 2, generator=generator) * image_size
    labels = torch.ones(1, 1, dtype=torch.int32)

    def decode(model: torch.nn.Module) -> Call:
        def call() -> object:
            sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            return model.sam_mask_decoder(
                image_embeddings=feat,
                image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
                repeat_image=False,
                high_res_features=[feat_s0, feat_s1],
            )
        return call

    yield "prompt_encoder+mask_decoder", meta and decode(meta), decode(ours)

    mask = torch.randn(1, 1, image_size, image_size, generator=generator)
    perceiver = getattr(ours, "spatial_perceiver", None)  # EdgeTAM: the memory encoder's output, compressed
    yield (
        "memory_encoder" if perceiver is None else "memory_encoder+perceiver",
        meta and (lambda: meta.memory_encoder(feat, mask, skip_mask_sigmoid=True)),
        (lambda: ours.memory_encoder(feat, mask, skip_mask_sigmoid=True)) if perceiver is None
        else (lambda: perceiver(*ours.memory_encoder(feat, mask, skip_mask_sigmoid=True))),
    )

    num_ptr_tokens = config.max_obj_ptrs_in_encoder * (hidden // mem_dim)
    num_tokens = config.num_maskmem * config.memory_tokens + num_ptr_tokens
    curr = torch.randn(1, side * side, hidden, generator=generator)
    curr_pos = torch.randn(1, side * side, hidden, generator=generator)
    memory = torch.randn(1, num_tokens, mem_dim, generator=generator)
    memory_pos = torch.randn(1, num_tokens, mem_dim, generator=generator)
    valid = torch.ones(1, num_tokens, dtype=torch.bool)
    # Meta's memory attention takes sequence-first tensors.
    seq_first = [t.transpose(0, 1) for t in (curr, memory, curr_pos, memory_pos)]
    yield (
        "memory_attention",
        meta and (lambda: meta.memory_attention(*seq_first, num_obj_ptr_tokens=num_ptr_tokens)),
        lambda: ours.memory_attention(curr, curr_pos, memory, memory_pos, num_ptr_tokens, valid),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=MODEL_NAMES)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per component (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per component first")
    parser.add_argument("--component", action="append",
                        help="only this component (repeatable); default: all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.model in META_YAML:
        meta: Optional[torch.nn.Module] = build_meta(args.model, image_size=args.image_size, seed=args.seed)
        ours = build_ours_from_meta(meta)
        compared = f"ours vs Meta's sam2==1.1.0 {args.model}, same weights and inputs"
    else:
        meta, ours = None, seeded_model(args.image_size, args.model, args.seed)
        compared = f"ours alone: Meta's sam2 package has no {args.model}"
    with torch.inference_mode():
        for name, meta_call, our_call in component_calls(meta, ours, args.image_size, args.seed):
            if args.component and name not in args.component:
                continue
            if meta_call is None:
                ours_ms, meta_ms = time_alone(our_call, args.repeats, args.warmup), None
            else:
                ours_ms, meta_ms = time_pair(meta_call, our_call, args.repeats, args.warmup)
            print(json.dumps({
                "component": name,
                "model": args.model,
                "image_size": args.image_size,
                "ours_ms": round(ours_ms, 2),
                "meta_ms": None if meta_ms is None else round(meta_ms, 2),
                "ratio": None if meta_ms is None else round(ours_ms / meta_ms, 3),
                "compared": compared,
            }), flush=True)


if __name__ == "__main__":
    main()

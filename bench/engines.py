"""How long building the TensorRT engines of the per-frame components takes, and how large they are.

Exports each component for each bucket (sam2_rt.runtime.engines.export_component) and builds its engine
(build_engine), without the cache; works on a CPU-only machine with torch-tensorrt-rtx (the engine is built,
not deserialised) and on a GPU machine with torch-tensorrt. One JSON line per engine:

    {"component": ..., "bucket": ..., "precision": ..., "image_size": ..., "device": ...,
     "export_s": ..., "build_s": ..., "engine_mib": ...}

    python bench/engines.py --image-size 256 --buckets 1 --precisions fp32 fp16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sam2_rt.runtime import engines  # noqa: E402
from sam2_rt.weights.checkpoint import random_model  # noqa: E402
from sam2_rt.modeling.config import MODEL_NAMES  # noqa: E402
from sam2_rt.runtime.export import COMPONENTS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=MODEL_NAMES)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--buckets", type=int, nargs="+", default=[1])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], choices=sorted(engines.PRECISIONS))
    parser.add_argument("--components", nargs="+", default=list(COMPONENTS), choices=COMPONENTS)
    parser.add_argument("--num-conditioning", type=int, default=4, help="TrackerConfig.max_conditioning_frames")
    args = parser.parse_args()

    model = random_model(args.model, args.image_size, args.device)
    for precision in args.precisions:
        for component in args.components:
            for bucket in (1,) if component == "image_encoder" else args.buckets:
                start = time.perf_counter()
                program, inputs = engines.export_component(model, component, bucket, precision, args.num_conditioning)
                exported = time.perf_counter()
                engine = engines.build_engine(program, inputs)
                built = time.perf_counter()
                print(json.dumps({
                    "component": component,
                    "bucket": bucket,
                    "precision": precision,
                    "image_size": args.image_size,
                    "device": args.device,
                    "export_s": round(exported - start, 1),
                    "build_s": round(built - exported, 1),
                    "engine_mib": round(len(engine.payload) / 2**20, 1),
                }), flush=True)


if __name__ == "__main__":
    main()

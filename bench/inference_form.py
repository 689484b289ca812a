"""What the tracker's inference form buys on this machine: EdgeTAM's RepViT trunk unfolded vs folded (timm's
re-parameterisation, `SAM2Model.prepare_for_inference`), and `forward_image` with and without channels-last
convolutions, for EdgeTAM and sam2.1_hiera_tiny; best of 5 calls, seeded random weights, fp32.

    .venv/bin/python bench/inference_form.py --image-size 1024
"""

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository root, for testkit
    sys.path.insert(0, str(REPO))

from testkit.oracle import present_objects_model  # noqa: E402


def best(call: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of `repeats` timed calls after one untimed call, in seconds."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(min(times), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=1024)
    size = parser.parse_args().image_size
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    model = present_objects_model(size, "edgetam")
    with torch.inference_mode():
        plain = copy.deepcopy(model.image_encoder.trunk)
        print("edgetam trunk unfolded s", best(lambda: plain(images)))
        print("edgetam forward_image unfolded s", best(lambda: model.forward_image(images)))
        model.prepare_for_inference()
        print("edgetam trunk folded s", best(lambda: model.image_encoder.trunk(images)))
        print("edgetam forward_image folded s", best(lambda: model.forward_image(images)))
        print("edgetam forward_image folded, channels_last s",
              best(lambda: model.forward_image(images, channels_last=True)))
    tiny = present_objects_model(size, "sam2.1_hiera_tiny").prepare_for_inference()
    with torch.inference_mode():
        print("tiny forward_image s", best(lambda: tiny.forward_image(images)))
        print("tiny forward_image channels_last s", best(lambda: tiny.forward_image(images, channels_last=True)))


if __name__ == "__main__":
    main()

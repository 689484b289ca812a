"""How a CPU best runs the image encoder of several frames: torch intra-op threads or Python threads?

The image encoder of K frames (one round of a node with K cameras) timed three ways, same process, same
random weights:

  serial_1    one call on the batch of K frames, 1 torch thread
  serial_T    one call on the batch of K frames, T torch threads (intra-op parallelism)
  threads_T   T Python threads, each encoding K / T of the frames with 1 torch thread (the GIL is released
              in the kernels)

Prints one JSON line per way, then a summary line with the speed-ups over serial_1 (always last):

    PYTHONPATH=. .venv/bin/python bench/encoder_threads.py --frames 4 --image-size 128 --threads 2 --rounds 10
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import threading
import time
from typing import Callable, List

import torch

from sam2_rt.weights.loading import build_model


def timed_rounds(run: Callable[[], None], rounds: int) -> float:
    """Median seconds of one call of `run` over `rounds` calls, after one warm-up call."""
    run()
    seconds: List[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--frames", type=int, default=4, help="frames per round (cameras)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="T: torch threads / Python threads")
    parser.add_argument("--rounds", type=int, default=10)
    options = parser.parse_args()
    if options.frames % options.threads:
        parser.error("--frames must be a multiple of --threads")

    torch.manual_seed(0)
    model, _ = build_model(options.model, None, options.image_size, torch.device("cpu"), random_weights=True)
    images = torch.rand(options.frames, 3, options.image_size, options.image_size)
    chunks = images.chunk(options.threads)

    @torch.inference_mode()
    def encode(batch: torch.Tensor) -> None:
        model.forward_image(batch)

    def in_threads() -> None:
        workers = [threading.Thread(target=encode, args=(chunk,)) for chunk in chunks]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    results = {}
    for name, threads, run in (("serial_1", 1, lambda: encode(images)),
                               (f"serial_{options.threads}", options.threads, lambda: encode(images)),
                               (f"threads_{options.threads}", 1, in_threads)):
        torch.set_num_threads(threads)
        results[name] = timed_rounds(run, options.rounds)
        print(json.dumps({"way": name, "torch_threads": threads, "ms_per_round": round(results[name] * 1e3, 1)}))
    base = results["serial_1"]
    print(json.dumps({
        "summary": True, "frames": options.frames, "image_size": options.image_size, "threads": options.threads,
        **{f"{name}_ms": round(value * 1e3, 1) for name, value in results.items()},
        **{f"{name}_speedup": round(base / value, 2) for name, value in results.items() if name != "serial_1"},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()

"""The runner a tracker gets: the backend asked for, or its fallback with the reason.

Its own module because it knows every backend: `backends` (eager, compile) and `engines` (TensorRT, built on
`backends`' fixed-shape runner) import nothing from here, so they never import each other.
"""

from __future__ import annotations

import logging
from typing import Tuple

from sam2_rt.modeling.sam2 import SAM2Model
from sam2_rt.runtime.backends import (
    PRECISIONS,
    BackendChoice,
    EagerRunner,
    RunnerOptions,
    compiled_runner,
    object_buckets,
    resolve_backend,
)
from sam2_rt.runtime.engines import engine_runner

logger = logging.getLogger(__name__)


def make_runner(model: SAM2Model, options: RunnerOptions) -> Tuple[EagerRunner, BackendChoice]:
    """The runner of `options.backend` (or its fallback, logged as a warning with the reason).

    Nothing is compiled here: Tracker.warmup builds (or loads) every bucket before the first frame.
    """
    if options.precision not in PRECISIONS:
        raise ValueError(f"unknown compute precision {options.precision!r} (resolve \"auto\" first with "
                         f"resolve_precision); choose one of {', '.join(PRECISIONS)}")
    device = next(model.parameters()).device
    choice = resolve_backend(options.backend, device)
    for reason in choice.reasons:
        logger.warning("backend %r unavailable, falling back: %s", options.backend, reason)
    buckets = object_buckets(options.max_objects)
    cuda_graphs = options.cuda_graphs
    if cuda_graphs and (choice.used != "compile" or device.type != "cuda"):
        logger.warning("CUDA graphs need the compile backend on a CUDA device (running %s on %s): not used",
                       choice.used, device)
        cuda_graphs = False
    if choice.used == "eager":
        return EagerRunner(model), choice
    if choice.used == "compile":
        return compiled_runner(model, buckets, options.compiler, cuda_graphs, options.steady_conditioning,
                               options.precision, options.num_conditioning, options.compile_cache_dir), choice
    return engine_runner(model, buckets, options), choice

"""Where a model runs and with which weights: device choice, checkpoint lookup, random weights.

One place for what the CLI and the node both decide before tracking.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Tuple

import torch

from sam2_rt.weights.checkpoint import CheckpointError, default_checkpoint_path, load_model, random_model
from sam2_rt.modeling.config import DEVICE_NAMES
from sam2_rt.modeling.sam2 import SAM2Model

logger = logging.getLogger(__name__)

# Device names accepted by resolve_device: the shared choices, plus a numbered GPU.
DEVICE_CHOICES = (*DEVICE_NAMES, "cuda:N")
# What a run with random weights says on its overlay and in its logs.
RANDOM_WEIGHTS_BANNER = "RANDOM WEIGHTS - masks are meaningless"


class MissingCheckpointError(CheckpointError):
    """No checkpoint was given and none was downloaded; the message names `sam2-rt download`."""


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cpu", "cuda", "cuda:N" as given.

    Raises:
      ValueError: an unknown name, or cuda requested where torch sees no CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but torch sees no CUDA device (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: torch sees only {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_checkpoint(model: str, checkpoint: Optional[str]) -> Optional[Path]:
    """The checkpoint file to load: the given one, else the downloaded file of the model, else None."""
    if checkpoint:
        return Path(checkpoint).expanduser()
    cached = default_checkpoint_path(model)
    return cached if cached.is_file() else None


def build_model(
    model: str, checkpoint: Optional[str], image_size: int, device: torch.device, random_weights: bool = False
) -> Tuple[SAM2Model, str]:
    """The named model with its weights (eval, float32, on `device`) and a description of the weights.

    Arguments:
      model: one of sam2_rt.modeling.config.MODEL_NAMES.
      checkpoint: Meta's .pt file; None or "": the file `sam2-rt download` stored, if any.
      image_size: model input side.
      device: where the model lives.
      random_weights: seeded random weights, whatever checkpoint there is (demos, tests, timing). A caller
        that allows them only as a fallback passes ``resolve_checkpoint(model, checkpoint) is None``.
    Raises:
      MissingCheckpointError: no checkpoint and no random weights.
      CheckpointError: the checkpoint file is unusable.
    """
    if random_weights:
        logger.warning("running with RANDOM weights: the masks are meaningless (for plumbing and timing only)")
        # Seeded so that two runs with random weights give the same (meaningless) masks.
        return random_model(model, image_size, device), "RANDOM (no checkpoint)"
    path = resolve_checkpoint(model, checkpoint)
    if path is None:
        raise MissingCheckpointError(
            f"no checkpoint for {model}: run `sam2-rt download {model}` (it stores the file at "
            f"{default_checkpoint_path(model)}, where it is found by default)"
        )
    return load_model(model, path, image_size, device), str(path)

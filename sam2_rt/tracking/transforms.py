"""Pre- and post-processing of frames and masks, in torch on the model's device.

Frames go in as the camera delivers them (any size, RGB) and come out as the square, normalised model
input; low-resolution mask logits go back out at the frame's own size. Nothing here validates its
inputs: `sam2_rt.tracking.tracker` checks frames and prompts at the door and calls these with valid data.
"""

from __future__ import annotations

import functools
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics SAM 2 was trained with, for RGB values in [0, 1].
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

Frame = Union[np.ndarray, torch.Tensor]


def frame_to_chw(frame: Frame, device: torch.device) -> torch.Tensor:
    """Move a frame to `device` as a (3, H, W) float32 tensor with values in [0, 1].

    Arguments:
      frame: an (H, W, 3) uint8 RGB numpy array, or a (3, H, W) RGB tensor, uint8 (0..255) or
        floating point (0..1).
      device: where the result lives (the model's device).
    Returns:
      (3, H, W) float32 tensor on `device`, RGB, values in [0, 1].
    """
    if isinstance(frame, np.ndarray):
        # HWC -> CHW after the copy to the device: the transfer then moves contiguous uint8 bytes.
        chw = torch.from_numpy(np.ascontiguousarray(frame)).to(device, non_blocking=True).permute(2, 0, 1)
    else:
        chw = frame.to(device, non_blocking=True)
    if chw.dtype == torch.uint8:
        return chw.float().div_(255.0)
    return chw.float()


def preprocess(frame: Frame, image_size: int, device: torch.device) -> torch.Tensor:
    """Turn a frame into SAM 2's input: resized to image_size x image_size, ImageNet-normalised.

    The aspect ratio is not preserved (SAM 2 is trained on squashed frames). Downscaling uses bilinear
    interpolation with antialiasing.

    Arguments:
      frame: see `frame_to_chw`.
      image_size: S, the model's square input side in pixels.
      device: the model's device.
    Returns:
      (1, 3, S, S) float32 tensor on `device`.
    """
    chw = frame_to_chw(frame, device)
    resized = F.interpolate(
        chw[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
    )
    mean, std = _normalisation(resized.device)
    return (resized - mean) / std


@functools.lru_cache(maxsize=None)
def _normalisation(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std (1, 3, 1, 1) on `device`, made once per device (no host-to-device copy per frame)."""
    with torch.inference_mode(False):
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return mean, std


def upsample_logits(low_res_logits: torch.Tensor, frame_size: Tuple[int, int]) -> torch.Tensor:
    """Bring mask logits to the frame's resolution (bilinear, align_corners=False, as Meta's predictor).

    Arguments:
      low_res_logits: (N, 1, S/4, S/4) float mask logits at the model's low resolution.
      frame_size: (H, W) of the original frame.
    Returns:
      (N, H, W) float32 logits; a pixel belongs to the object where its logit is > 0.
    """
    logits = F.interpolate(low_res_logits.float(), size=frame_size, mode="bilinear", align_corners=False)
    return logits[:, 0]


def resize_mask_prompt(mask: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize a binary mask prompt to the model input size, as Meta's `add_new_mask` does.

    Arguments:
      mask: (H, W) bool tensor at the original frame resolution.
      image_size: S.
    Returns:
      (1, S, S) float32 tensor of 0.0 / 1.0 (antialiased bilinear resize, then >= 0.5).
    """
    as_float = mask.float()[None, None]
    if tuple(mask.shape) == (image_size, image_size):
        return as_float[0]
    resized = F.interpolate(
        as_float, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
    )
    return (resized >= 0.5).float()[0]


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Axis-aligned boxes enclosing binary masks.

    Arguments:
      masks: (N, H, W) bool.
    Returns:
      (N, 4) float32 boxes (x0, y0, x1, y1) in pixel-edge coordinates of the mask: x0 / y0 is the first
      column / row of the mask, x1 / y1 the last one + 1 (so x1 - x0 is the width in pixels).
      All zeros for an empty mask.
    """
    num, height, width = masks.shape
    if num == 0:
        return torch.zeros(0, 4, device=masks.device)
    cols = masks.any(dim=1)  # (N, W): columns holding at least one mask pixel
    rows = masks.any(dim=2)  # (N, H)
    col_index = torch.arange(width, device=masks.device)
    row_index = torch.arange(height, device=masks.device)
    # first / last occupied index via min / max over the occupied ones (sentinels elsewhere)
    x0 = torch.where(cols, col_index, width).amin(dim=1)
    x1 = torch.where(cols, col_index, -1).amax(dim=1) + 1
    y0 = torch.where(rows, row_index, height).amin(dim=1)
    y1 = torch.where(rows, row_index, -1).amax(dim=1) + 1
    boxes = torch.stack((x0, y0, x1, y1), dim=1).float()
    present = cols.any(dim=1, keepdim=True)
    return torch.where(present, boxes, torch.zeros_like(boxes))


def label_image(logits: torch.Tensor, object_ids: torch.Tensor) -> torch.Tensor:
    """Merge per-object mask logits into one label image.

    Arguments:
      logits: (N, H, W) float mask logits at the frame resolution.
      object_ids: (N,) integer ids, > 0.
    Returns:
      (H, W) int32 tensor: the id of the object covering each pixel, 0 for background; where masks
      overlap, the object with the higher logit wins.
    """
    zero = torch.zeros((), dtype=torch.int32, device=logits.device)
    if logits.shape[0] == 0:
        return zero.expand(logits.shape[1:]).clone()
    ids = object_ids.to(device=logits.device, dtype=torch.int32)
    # A running maximum over the few objects: element-wise ops over (H, W), several times faster on CPU
    # than a reduction over dim 0 of (N, H, W). Ties keep the earlier object, like max(dim=0).
    best_logit = logits[0]
    labels = torch.where(best_logit > 0, ids[0], zero)
    for obj in range(1, logits.shape[0]):
        wins = (logits[obj] > best_logit) & (logits[obj] > 0)
        labels = torch.where(wins, ids[obj], labels)
        best_logit = torch.maximum(best_logit, logits[obj])
    return labels

"""Checks of what a caller hands the tracker (frames, object ids, clicks, boxes, masks), and the conversion of
valid prompts to model coordinates. Every check raises `TrackerInputError` with what was wrong, before any
stream changes; nothing here touches a stream or the model."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from sam2_rt.tracking.state import MAX_OBJECT_ID, PreparedPrompt, TrackerInputError
from sam2_rt.tracking.transforms import Frame, resize_mask_prompt

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float], Sequence[Sequence[float]]]


def check_frame(frame: Frame, index: int = 0, count: int = 1) -> Tuple[int, int]:
    """The (H, W) of a frame `Tracker.step` accepts (see its `frame` argument), frame `index` of `count` given
    to `Tracker.step_many`.

    Raises:
      TrackerInputError: not a numpy array or tensor, wrong shape or dtype, or empty; with several frames the
        message names the frame's position ("stream 1 of 3").
    """
    try:
        return _frame_size(frame)
    except TrackerInputError as err:
        if count == 1:
            raise
        raise TrackerInputError(f"stream {index} of {count}: {err}") from None


def _frame_size(frame: Frame) -> Tuple[int, int]:
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise TrackerInputError(f"a numpy frame must be (H, W, 3) RGB, got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise TrackerInputError(f"a numpy frame must be uint8, got {frame.dtype}")
        height, width = frame.shape[:2]
    elif isinstance(frame, torch.Tensor):
        if frame.dim() != 3 or frame.shape[0] != 3:
            raise TrackerInputError(f"a tensor frame must be (3, H, W) RGB, got shape {tuple(frame.shape)}")
        if frame.dtype != torch.uint8 and not frame.dtype.is_floating_point:
            raise TrackerInputError(f"a tensor frame must be uint8 or floating point, got {frame.dtype}")
        height, width = frame.shape[1:]
    else:
        raise TrackerInputError(f"a frame must be a numpy array or a torch tensor, got {type(frame).__name__}")
    if height < 1 or width < 1:
        raise TrackerInputError(f"a frame must not be empty, got {height}x{width}")
    return int(height), int(width)


def check_object_id(known_ids: Sequence[int], object_id: int, max_objects: int) -> None:
    """Whether a prompt for `object_id` may join a stream whose objects are `known_ids`.

    Raises:
      TrackerInputError: not an int in 1 .. 2**31 - 1, or a new id while `max_objects` are tracked.
    """
    if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)):
        raise TrackerInputError(f"object_id must be an int, got {type(object_id).__name__}")
    if not 1 <= int(object_id) <= MAX_OBJECT_ID:
        raise TrackerInputError(f"object_id must be in 1..{MAX_OBJECT_ID} (0 is background), got {object_id}")
    if int(object_id) not in known_ids and len(known_ids) >= max_objects:
        raise TrackerInputError(f"cannot add object {object_id}: the stream already has max_objects={max_objects}")


def checked_frame_size(frame_size: Optional[Tuple[int, int]], last: Optional[Tuple[int, int]] = None
                       ) -> Tuple[int, int]:
    """The (H, W) prompt coordinates refer to: `frame_size`, else the stream's `last` frame size.

    Raises:
      TrackerInputError: neither is known, or not two positive ints.
    """
    if frame_size is None:
        if last is None:
            raise TrackerInputError("no frame stepped yet: pass frame_size=(H, W) with the prompt")
        return last
    if len(frame_size) != 2 or any(int(v) != v or v < 1 for v in frame_size):
        raise TrackerInputError(f"frame_size must be (H, W) positive ints, got {frame_size!r}")
    return int(frame_size[0]), int(frame_size[1])


def prepare_prompt(frame_size: Tuple[int, int], image_size: int, device: torch.device,
                   points: Optional[ArrayLike] = None, labels: Optional[ArrayLike] = None,
                   box: Optional[ArrayLike] = None, mask: Optional[Union[np.ndarray, torch.Tensor]] = None
                   ) -> PreparedPrompt:
    """A valid prompt of a (H, W) frame in the coordinates of an S x S model input (S = `image_size`); a mask
    prompt goes to `device`. Arguments are those of `Tracker.add_prompt`.

    Raises:
      TrackerInputError: invalid prompt or frame size.
    """
    size = checked_frame_size(frame_size)
    if mask is not None:
        if points is not None or labels is not None or box is not None:
            raise TrackerInputError("a mask prompt cannot be combined with points or a box")
        return PreparedPrompt(mask=mask_prompt(mask, size, image_size, device))
    coords, point_labels = point_prompt(points, labels, box, size, image_size)
    return PreparedPrompt(points=coords, labels=point_labels)


def point_prompt(points: Optional[ArrayLike], labels: Optional[ArrayLike], box: Optional[ArrayLike],
                 frame_size: Tuple[int, int], image_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate clicks and/or a box; return (P, 2) float32 model coordinates and (P,) int32 labels."""
    height, width = frame_size
    if (points is None) != (labels is None):
        raise TrackerInputError("points and labels must be given together")
    if points is None and box is None:
        raise TrackerInputError("a prompt needs points (with labels), a box, or a mask")
    parts: List[np.ndarray] = []
    part_labels: List[np.ndarray] = []
    if box is not None:
        box_xy = as_float_array(box, "box")
        if box_xy.shape != (4,):
            raise TrackerInputError(f"box must be (x0, y0, x1, y1), got shape {box_xy.shape}")
        x0, y0, x1, y1 = box_xy
        if not (x1 > x0 and y1 > y0):
            raise TrackerInputError(f"box must have x1 > x0 and y1 > y0, got {box_xy.tolist()}")
        parts.append(box_xy.reshape(2, 2))
        part_labels.append(np.array([2, 3]))
    if points is not None:
        xy = as_float_array(points, "points")
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise TrackerInputError(f"points must have shape (N, 2), got {xy.shape}")
        if xy.shape[0] == 0:
            raise TrackerInputError("points is empty: give at least one point")
        label_values = np.asarray(labels)
        if label_values.shape != (xy.shape[0],):
            raise TrackerInputError(
                f"labels must have shape ({xy.shape[0]},) to match points, got {label_values.shape}"
            )
        if label_values.dtype.kind not in "biuf" or not np.isin(label_values, (0, 1)).all():
            raise TrackerInputError(f"labels must be 0 (background) or 1 (object), got {label_values.tolist()}")
        parts.append(xy)
        part_labels.append(label_values.astype(np.int64))
    coords = np.concatenate(parts)
    outside = (coords[:, 0] < 0) | (coords[:, 0] > width) | (coords[:, 1] < 0) | (coords[:, 1] > height)
    if outside.any():
        raise TrackerInputError(
            f"prompt coordinates {coords[outside].tolist()} lie outside the {width}x{height} frame"
        )
    # Meta's arithmetic, in float32: divide by (width, height), multiply by image_size.
    pixels = torch.tensor(coords, dtype=torch.float32)
    model_coords = pixels / torch.tensor([width, height]) * image_size
    return model_coords, torch.tensor(np.concatenate(part_labels), dtype=torch.int32)


def mask_prompt(mask: Union[np.ndarray, torch.Tensor], frame_size: Tuple[int, int], image_size: int,
                device: torch.device) -> torch.Tensor:
    """Validate an (H, W) mask prompt; return it resized to (1, S, S) float32 0/1 on `device`."""
    mask_tensor = torch.as_tensor(mask)
    if mask_tensor.dtype != torch.bool and (mask_tensor.dtype.is_floating_point or mask_tensor.is_complex()):
        raise TrackerInputError(f"mask must be bool (or integer 0/1), got {mask_tensor.dtype}")
    if tuple(mask_tensor.shape) != tuple(frame_size):
        raise TrackerInputError(f"mask must have the frame's size {tuple(frame_size)}, got {tuple(mask_tensor.shape)}")
    if mask_tensor.dtype != torch.bool:
        if not ((mask_tensor == 0) | (mask_tensor == 1)).all():
            raise TrackerInputError("an integer mask must hold only 0 and 1")
        mask_tensor = mask_tensor != 0
    return resize_mask_prompt(mask_tensor.to(device), image_size)


def as_float_array(value: ArrayLike, name: str) -> np.ndarray:
    """A prompt coordinate array as float64 numpy, rejecting non-numbers, NaN and infinity."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
        if array.dtype.kind == "c":  # a cast would drop the imaginary part (with only a warning)
            raise TrackerInputError(f"{name} must be real numbers, got complex values {array.tolist()}")
        array = array.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise TrackerInputError(f"{name} must be numbers, got {value!r}") from err
    if not np.isfinite(array).all():
        raise TrackerInputError(f"{name} must be finite numbers (no NaN or infinity), got {array.tolist()}")
    return array

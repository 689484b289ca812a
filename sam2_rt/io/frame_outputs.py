"""One frame's tracking result on the host, in the form every output needs (ROS messages, overlay, CLI files).

`FrameOutputs.from_result` moves what the outputs need off the model's device in two copies (one int32
buffer: the label image and the mask areas; one float32 buffer: boxes, predicted IoU, presence); everything
downstream works on numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Optional, Tuple

import numpy as np
import torch

from sam2_rt.tracking.state import TrackResult

# Object ids of the outputs are uint16 (label image pixels, our messages' object_id).
MAX_OUTPUT_OBJECT_ID = 0xFFFF


@dataclass(frozen=True)
class FrameOutputs:
    """One frame's tracking result on the host, sorted by ascending object id (N objects, frame H x W).

    Attributes:
      object_ids: (N,) int64 ids, 1..65535.
      labels: (H, W) uint16 label image: id of the object covering the pixel, 0 = background; where masks
        overlap, the higher logit wins.
      boxes: (N, 4) float32 (x0, y0, x1, y1) pixels of the input image, x1 / y1 exclusive; zeros if empty.
      scores: (N,) float32 predicted IoU.
      presence: (N,) float32 probability that the object is visible.
      states: (N,) uint8 ObjectState values (equal to TrackedObject.STATE_*).
      areas: (N,) int64 mask pixels at the input resolution (masks may overlap: not from `labels`).
      classes: N class labels, the detector class each object was started with ("" = none); empty when
        nothing gave classes (see `with_classes`, `class_names`).
    """

    object_ids: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    presence: np.ndarray
    states: np.ndarray
    areas: np.ndarray
    classes: Tuple[str, ...] = ()

    def with_classes(self, classes: Mapping[int, Optional[str]]) -> "FrameOutputs":
        """These outputs with each object's class label from `classes` (object id -> label; others "")."""
        return replace(self, classes=tuple(classes.get(int(obj_id)) or "" for obj_id in self.object_ids))

    def class_names(self) -> Tuple[str, ...]:
        """The N class labels, in object order ("" where none is known)."""
        return self.classes or ("",) * len(self.object_ids)

    @classmethod
    def from_result(cls, result: TrackResult) -> "FrameOutputs":
        """Copy a TrackResult (tensors on any device) to numpy, in ascending id order.

        Raises:
          ValueError: an object id above 65535 (it would not fit the uint16 label image).
        """
        ids = np.asarray(result.object_ids, dtype=np.int64)
        if ids.size and ids.max() > MAX_OUTPUT_OBJECT_ID:
            raise ValueError(f"object ids above {MAX_OUTPUT_OBJECT_ID} do not fit a uint16 label image: {ids.tolist()}")
        order = np.argsort(ids, kind="stable")
        labels = result.label_image()
        height, width = labels.shape
        # Summing the bytes of the bool masks (0 / 1) is ~5x faster than summing them as bool.
        areas = result.masks.flatten(1).view(torch.uint8).sum(dim=1, dtype=torch.int32)
        integers = torch.cat((labels.flatten().to(torch.int32), areas)).cpu().numpy()
        floats = torch.cat(
            (result.boxes.float(), result.ious.float()[:, None], result.presence.float()[:, None]), dim=1
        ).cpu().numpy()
        return cls(
            object_ids=ids[order],
            labels=integers[: height * width].reshape(height, width).astype(np.uint16),
            boxes=floats[order, :4],
            scores=floats[order, 4],
            presence=floats[order, 5],
            states=np.asarray([int(s) for s in result.states], dtype=np.uint8)[order],
            areas=integers[height * width :].astype(np.int64)[order],
        )


def box_to_roi(box: np.ndarray) -> Tuple[int, int, int, int]:
    """(x_offset, y_offset, width, height) in whole pixels of an (x0, y0, x1, y1) box, as in
    sensor_msgs/RegionOfInterest; all zeros for an empty box."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return max(0, x0), max(0, y0), max(0, x1 - x0), max(0, y1 - y0)

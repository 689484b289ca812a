"""One frame's tracking result on the host, in the form every output needs (ROS messages, overlay, CLI files).

`FrameOutputs.from_result` moves what the outputs need off the model's device in two copies (one int32
buffer: the label image and the mask areas; one float32 buffer: boxes, predicted IoU, presence); everything
downstream works on numpy only. `FrameOutputs.objects` is the one per-object record (`ObjectOutput`) that
the JSON lines, the rosbag2 recording and the node's TrackedObject messages are all built from.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from sam2_rt.tracking.state import ObjectState, TrackResult

# Object ids of the outputs are uint16 (label image pixels, our messages' object_id).
MAX_OUTPUT_OBJECT_ID = 0xFFFF


@dataclass(frozen=True)
class ObjectOutput:
    """One tracked object on one frame, as every output reports it: a `sam2-rt track --json` object, a
    sam2_ros/TrackedObject of the node and of `sam2-rt track --bag` (`FrameOutputs.objects`).

    Attributes:
      object_id: 1..65535.
      state: TRACKING / OCCLUDED / LOST (values equal to TrackedObject.STATE_*).
      label: the detector class the object was started with ("" = none).
      score: predicted IoU.
      presence: probability that the object is visible.
      box: (x0, y0, x1, y1) pixels of the input image, x1 / y1 exclusive; zeros for an empty mask.
      roi: the box in whole pixels as (x_offset, y_offset, width, height) (`box_to_roi`).
      mask_area: mask pixels at the input resolution.
    """

    object_id: int
    state: ObjectState
    label: str
    score: float
    presence: float
    box: Tuple[float, float, float, float]
    roi: Tuple[int, int, int, int]
    mask_area: int

    def message_fields(self) -> Dict[str, Any]:
        """Keyword arguments of a sam2_ros/TrackedObject, all but ``bbox`` (a RegionOfInterest of `roi_fields`)."""
        return {"object_id": self.object_id, "state": int(self.state), "label": self.label, "score": self.score,
                "presence": self.presence, "mask_area": self.mask_area}

    def roi_fields(self) -> Dict[str, Any]:
        """Keyword arguments of the sensor_msgs/RegionOfInterest of the object's box (TrackedObject.bbox)."""
        x_offset, y_offset, width, height = self.roi
        return {"x_offset": x_offset, "y_offset": y_offset, "height": height, "width": width, "do_rectify": False}


@dataclass(frozen=True)
class FrameOutputs:
    """One frame's tracking result on the host, sorted by ascending object id (N objects, frame H x W).

    Attributes:
      object_ids: (N,) int64 ids, 1..65535.
      labels: (H, W) uint16 label image (`TrackResult.label_image`): id of the object covering the pixel,
        0 = background; where masks overlap, the higher logit wins.
      boxes: (N, 4) float32 (x0, y0, x1, y1) pixels of the input image, x1 / y1 exclusive; zeros if empty.
      scores: (N,) float32 predicted IoU.
      presence: (N,) float32 probability that the object is visible.
      states: (N,) uint8 ObjectState values (equal to TrackedObject.STATE_*).
      areas: (N,) int64 mask pixels at the input resolution (masks may overlap: not from `labels`).
      classes: N class labels, the detector class each object was started with ("" = none); empty when
        nothing gave classes (see `with_classes`, `class_names`).
    The per-object fields together, one `ObjectOutput` per object, are `objects`.
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

    @cached_property
    def objects(self) -> Tuple[ObjectOutput, ...]:
        """The N per-object records, in object order; built once per FrameOutputs, shared by every output."""
        return tuple(
            ObjectOutput(
                object_id=int(obj_id),
                state=ObjectState(int(state)),
                label=label,
                score=float(score),
                presence=float(presence),
                box=tuple(float(v) for v in box),
                roi=box_to_roi(box),
                mask_area=int(area),
            )
            for obj_id, state, label, score, presence, box, area in zip(
                self.object_ids, self.states, self.class_names(), self.scores, self.presence, self.boxes, self.areas
            )
        )

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

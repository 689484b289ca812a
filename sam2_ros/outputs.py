"""A tracker result as ROS messages: label image, TrackedObjectArray, vision_msgs detections.

The builders take `FrameOutputs` (`sam2_rt.io.frame_outputs`: the result copied to the host once per frame,
re-exported here) and work on numpy only. Every message carries the header of the INPUT image, so
consumers can line the results up with the frame they were computed on.
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from sam2_ros.conversions import label_image
from sam2_ros.msg import TrackedObject, TrackedObjectArray
from sam2_rt.io.frame_outputs import FrameOutputs, box_to_roi

__all__ = [
    "Detection2DArray", "FrameOutputs", "detections_message", "duration_from_ns", "mask_message", "objects_message",
]

try:  # vision_msgs has no PyPI wheel: detections are published only where a ROS install provides it.
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:
    Detection2DArray = None


def duration_from_ns(nanoseconds: int) -> Duration:
    """A builtin_interfaces/Duration of a non-negative number of nanoseconds."""
    nanoseconds = max(0, int(nanoseconds))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def mask_message(outputs: FrameOutputs, header: Header) -> Image:
    """The mono16 label image (pixel = object id, 0 = background), same size and header as the input."""
    return label_image(outputs.labels, header)


def _roi(box: np.ndarray) -> RegionOfInterest:
    x_offset, y_offset, width, height = box_to_roi(box)
    return RegionOfInterest(x_offset=x_offset, y_offset=y_offset, width=width, height=height, do_rectify=False)


def objects_message(outputs: FrameOutputs, header: Header, latency_ns: int, dropped_frames: int) -> TrackedObjectArray:
    """TrackedObjectArray of one frame.

    Arguments:
      outputs: the frame's result.
      header: the input image's header (copied unchanged).
      latency_ns: time from the image's arrival at the node to this publication.
      dropped_frames: input frames dropped since activation.
    """
    objects: List[TrackedObject] = [
        TrackedObject(
            object_id=int(obj_id),
            state=int(state),
            label=label,
            score=float(score),
            presence=float(presence),
            bbox=_roi(box),
            mask_area=int(area),
        )
        for obj_id, state, label, score, presence, box, area in zip(
            outputs.object_ids, outputs.states, outputs.class_names(), outputs.scores, outputs.presence,
            outputs.boxes, outputs.areas,
        )
    ]
    return TrackedObjectArray(
        header=header, objects=objects, latency=duration_from_ns(latency_ns), dropped_frames=int(dropped_frames)
    )


def detections_message(outputs: FrameOutputs, header: Header) -> Optional[Any]:
    """vision_msgs/Detection2DArray (id and class_id = object id, score = predicted IoU), or None without
    vision_msgs. Objects with an empty mask are left out (they have no box)."""
    if Detection2DArray is None:
        return None
    detections = []
    for obj_id, score, box, area in zip(outputs.object_ids, outputs.scores, outputs.boxes, outputs.areas):
        if area == 0:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        detection = Detection2D(header=header, id=str(int(obj_id)))
        detection.bbox.center.position.x = (x0 + x1) / 2.0
        detection.bbox.center.position.y = (y0 + y1) / 2.0
        detection.bbox.size_x = x1 - x0
        detection.bbox.size_y = y1 - y0
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(int(obj_id))
        hypothesis.hypothesis.score = float(score)
        detection.results = [hypothesis]
        detections.append(detection)
    return Detection2DArray(header=header, detections=detections)

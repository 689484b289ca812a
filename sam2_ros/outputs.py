"""A tracker result as ROS messages: label image, TrackedObjectArray, vision_msgs detections.

The builders take `FrameOutputs` (`sam2_rt.io.frame_outputs`: the result copied to the host once per frame,
re-exported here) and work on numpy only; the per-object messages map the fields of its `objects` records
(`ObjectOutput`, shared with `sam2-rt track`'s JSON lines and rosbag2 recording) to message fields. Every
message carries the header of the INPUT image, so consumers can line the results up with the frame they
were computed on.
"""
from __future__ import annotations

from typing import Any, Optional

from builtin_interfaces.msg import Duration
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from sam2_ros.conversions import label_map_to_image
from sam2_ros.msg import TrackedObject, TrackedObjectArray
from sam2_rt.io.frame_outputs import FrameOutputs

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
    return label_map_to_image(outputs.labels, header)


def objects_message(outputs: FrameOutputs, header: Header, latency_ns: int, dropped_frames: int) -> TrackedObjectArray:
    """TrackedObjectArray of one frame: a TrackedObject of each of ``outputs.objects`` (`ObjectOutput`).

    Arguments:
      outputs: the frame's result.
      header: the input image's header (copied unchanged).
      latency_ns: time from the image's arrival at the node to this publication.
      dropped_frames: input frames dropped since activation.
    """
    objects = [
        TrackedObject(bbox=RegionOfInterest(**obj.roi_fields()), **obj.message_fields()) for obj in outputs.objects
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
    for obj in outputs.objects:
        if obj.mask_area == 0:
            continue
        x0, y0, x1, y1 = obj.box
        detection = Detection2D(header=header, id=str(obj.object_id))
        detection.bbox.center.position.x = (x0 + x1) / 2.0
        detection.bbox.center.position.y = (y0 + y1) / 2.0
        detection.bbox.size_x = x1 - x0
        detection.bbox.size_y = y1 - y0
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(obj.object_id)
        hypothesis.hypothesis.score = obj.score
        detection.results = [hypothesis]
        detections.append(detection)
    return Detection2DArray(header=header, detections=detections)

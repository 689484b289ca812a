"""A rosbag2 recording of a tracking run, written with the pure-Python ``rosbags`` library (no ROS needed).

Topics:
  the input images   rosbag2 input: its topic and type, each message copied byte for byte at its recorded
                     time; other inputs: INPUT_TOPIC, sensor_msgs/Image rgb8
  MASKS_TOPIC        sensor_msgs/Image mono16, pixel = object id, 0 = background (the node's `masks`)
  OBJECTS_TOPIC      sam2_ros/msg/TrackedObjectArray (the node's `objects`), latency = the tracker's time
Masks and objects carry the input image's header (stamp and frame_id) and are recorded at the input's time,
so `ros2 bag play` replays them in step with the images. Our message types are registered from the text of
the package's msg/*.msg files, so their type hashes are the ones ROS computes for sam2_ros.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from sam2_rt.io.frame_outputs import FrameOutputs
from sam2_rt.io.image_messages import ImageFields, encode_image, encode_label_map
from sam2_rt.io.video import IMAGE_MSGTYPE, VideoFrame, ros_typestore

INPUT_TOPIC = "/image"
MASKS_TOPIC = "/masks"
OBJECTS_TOPIC = "/objects"
OBJECTS_MSGTYPE = "sam2_ros/msg/TrackedObjectArray"
# In dependency order: each needs the ones before it.
_OUR_MESSAGES = ("TrackedObject", "TrackedObjectArray")
STORAGES = ("sqlite3", "mcap")


class BagOutputError(RuntimeError):
    """The recording cannot be written (it exists, its folder is not writable, our msg files are missing)."""


def interface_dirs() -> List[Path]:
    """Folders where the sam2_ros msg/*.msg files may be, in order: the source checkout (editable
    install), every ROS prefix on AMENT_PREFIX_PATH, this Python's prefix (the venv's interface build)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    return [Path(__file__).resolve().parents[1] / "msg"] + [Path(p) / "share" / "sam2_ros" / "msg" for p in prefixes]


def sam2_ros_typestore() -> Any:
    """rosbags type store with the standard messages and sam2_ros/msg/TrackedObject(Array) registered."""
    from rosbags.typesys import get_types_from_msg

    for folder in interface_dirs():
        if all((folder / f"{name}.msg").is_file() for name in _OUR_MESSAGES):
            break
    else:
        raise BagOutputError(
            "cannot find the sam2_ros message definitions (msg/TrackedObject.msg) in "
            + ", ".join(map(str, interface_dirs()))
        )
    store = ros_typestore()
    for name in _OUR_MESSAGES:
        store.register(get_types_from_msg((folder / f"{name}.msg").read_text(encoding="utf-8"), f"sam2_ros/msg/{name}"))
    return store


class BagOutput:
    """Writes one recording; `write` once per tracked frame, then `close` (also on errors: the bag is then
    closed with what it has)."""

    def __init__(self, path: Path, storage: str = "sqlite3") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise BagOutputError(f"unknown rosbag2 storage {storage!r}; choose one of {', '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise BagOutputError(f"{self.path} exists already (a recording is never overwritten)")
        self._store = sam2_ros_typestore()
        self._types = self._store.types
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=8, storage_plugin=plugin)
        try:
            self._writer.open()
        except OSError as error:
            raise BagOutputError(f"cannot write the recording {self.path}: {error.strerror or error}") from error
        self._connections: Dict[Tuple[str, str], Any] = {}
        self.frames = 0

    def _connection(self, topic: str, msgtype: str) -> Any:
        key = (topic, msgtype)
        if key not in self._connections:
            self._connections[key] = self._writer.add_connection(topic, msgtype, typestore=self._store)
        return self._connections[key]

    def _write(self, topic: str, msgtype: str, log_time_ns: int, msg: Any) -> None:
        self._writer.write(self._connection(topic, msgtype), log_time_ns, self._store.serialize_cdr(msg, msgtype))

    def _header(self, frame: VideoFrame) -> Any:
        time = self._types["builtin_interfaces/msg/Time"](sec=frame.stamp_ns // 10**9, nanosec=frame.stamp_ns % 10**9)
        return self._types["std_msgs/msg/Header"](stamp=time, frame_id=frame.frame_id)

    def _image(self, header: Any, fields: ImageFields) -> Any:
        values = fields._asdict()
        values["data"] = np.frombuffer(fields.data, dtype=np.uint8)
        return self._types[IMAGE_MSGTYPE](header=header, **values)

    def write(self, frame: VideoFrame, outputs: FrameOutputs, latency_ns: int) -> None:
        """Record the frame's input image, label image and objects (outputs sorted by id, as FrameOutputs is).

        Arguments:
          frame: the input frame (its recorded message is copied when it has one).
          outputs: the frame's result.
          latency_ns: the tracker's time for this frame (TrackedObjectArray.latency).
        """
        header = self._header(frame)
        if frame.message is not None:
            log_time_ns = frame.message.log_time_ns
            self._writer.write(self._connection(frame.message.topic, frame.message.msgtype), log_time_ns,
                               frame.message.raw)
        else:
            log_time_ns = frame.stamp_ns
            self._write(INPUT_TOPIC, IMAGE_MSGTYPE, log_time_ns, self._image(header, encode_image(frame.rgb, "rgb8")))
        self._write(MASKS_TOPIC, IMAGE_MSGTYPE, log_time_ns, self._image(header, encode_label_map(outputs.labels)))
        self._write(OBJECTS_TOPIC, OBJECTS_MSGTYPE, log_time_ns, self._objects(header, outputs, latency_ns))
        self.frames += 1

    def _objects(self, header: Any, outputs: FrameOutputs, latency_ns: int) -> Any:
        types = self._types
        roi_type, object_type = types["sensor_msgs/msg/RegionOfInterest"], types["sam2_ros/msg/TrackedObject"]
        objects = [object_type(bbox=roi_type(**obj.roi_fields()), **obj.message_fields()) for obj in outputs.objects]
        latency_ns = max(0, int(latency_ns))
        latency = types["builtin_interfaces/msg/Duration"](sec=latency_ns // 10**9, nanosec=latency_ns % 10**9)
        return types[OBJECTS_MSGTYPE](header=header, objects=objects, latency=latency, dropped_frames=0)

    def close(self) -> None:
        """Finish the recording (writes its metadata.yaml); idempotent."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

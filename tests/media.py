"""Generated inputs for the video-source and CLI tests: a moving-shapes clip as a video file, an image
folder and rosbag2 recordings (written with rosbags, the way a robot's recorder would)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np

HEIGHT, WIDTH = 96, 128
# Two objects of the generated clip: a red square and a green disc, moving right by STEP pixels a frame.
SQUARE_SIDE, DISC_RADIUS, STEP = 24, 12, 2
BAG_RATE_HZ = 10.0
BAG_START_NS = 1_700_000_000_123_000_000
BAG_FRAME_ID = "camera_optical"


def square_centre(index: int) -> tuple:
    """(x, y) centre of the square on frame `index`."""
    return 20 + STEP * index + SQUARE_SIDE // 2, 20 + SQUARE_SIDE // 2


def disc_centre(index: int) -> tuple:
    """(x, y) centre of the disc on frame `index`."""
    return 40 + STEP * index, 70


def clip(frames: int = 6, height: int = HEIGHT, width: int = WIDTH) -> List[np.ndarray]:
    """(H, W, 3) uint8 RGB frames: a red square and a green disc on a dark gradient, moving right."""
    ramp = np.linspace(10, 60, width, dtype=np.float32)[None, :, None]
    background = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
    out = []
    for index in range(frames):
        rgb = background.copy()
        x, y = square_centre(index)
        half = SQUARE_SIDE // 2
        rgb[y - half : y + half, x - half : x + half] = (220, 40, 40)
        cv2.circle(rgb, disc_centre(index), DISC_RADIUS, (40, 200, 60), -1)
        out.append(rgb)
    return out


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> Path:
    """An MJPG .avi of RGB frames."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_folder(folder: Path, frames: Sequence[np.ndarray]) -> Path:
    """PNG files frame_0.png, frame_1.png, ... (names that sort wrongly as plain strings past 10)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{index}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def stamp_ns(index: int) -> int:
    """Header stamp of bag frame `index`: BAG_START_NS + index / BAG_RATE_HZ."""
    return BAG_START_NS + int(round(index * 1e9 / BAG_RATE_HZ))


def write_bag(path: Path, frames: Sequence[np.ndarray], compressed: bool = False, storage: str = "sqlite3",
              extra_topic: bool = False) -> Path:
    """A rosbag2 recording of the frames on /camera/image_raw (sensor_msgs/Image rgb8) or
    /camera/image_raw/compressed (CompressedImage png) at BAG_RATE_HZ, header frame_id BAG_FRAME_ID, each
    recorded 5 ms after its stamp. `extra_topic` adds a std_msgs/String topic /chatter."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    Header, Time = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        if compressed:
            topic, msgtype = "/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage"
        else:
            topic, msgtype = "/camera/image_raw", "sensor_msgs/msg/Image"
        connection = writer.add_connection(topic, msgtype, typestore=store)
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store) if extra_topic else None
        for index, rgb in enumerate(frames):
            stamp = stamp_ns(index)
            header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=BAG_FRAME_ID)
            if compressed:
                ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                assert ok
                msg = types[msgtype](header=header, format="png", data=png.reshape(-1))
            else:
                height, width = rgb.shape[:2]
                msg = types[msgtype](header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
                                     step=width * 3, data=np.ascontiguousarray(rgb).reshape(-1))
            writer.write(connection, stamp + 5_000_000, store.serialize_cdr(msg, msgtype))
            if chatter is not None:
                text = types["std_msgs/msg/String"](data=f"frame {index}")
                writer.write(chatter, stamp + 1_000_000, store.serialize_cdr(text, "std_msgs/msg/String"))
    if storage == "mcap":
        return next(path.glob("*.mcap"))
    return path

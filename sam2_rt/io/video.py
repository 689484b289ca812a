"""Frame sources: video files, image folders, cameras, stream URLs and rosbag2 recordings, one interface.

    with open_source("clip.mp4") as source:          # or "frames/", "0" (camera), "rtsp://...",
        for frame in source:                          # "recording/" or "recording.mcap" with topic=...
            frame.rgb, frame.time_s, frame.stamp_ns, frame.frame_id

Every source reads its first frame when it is opened, so an unreadable input fails at once with a
`VideoSourceError` naming it, and `size` is known before the first frame is used. rosbag2 recordings
(directory with metadata.yaml, or a .mcap / .db3 file) are read with the pure-Python ``rosbags`` library:
no ROS install is needed. Their sensor_msgs/Image and sensor_msgs/CompressedImage messages are decoded by
:mod:`sam2_rt.io.image_messages` (the node's decoder too), and each frame keeps the message's header stamp,
frame_id and raw bytes, so outputs can carry the input's header and the input can be copied into a bag.
"""
from __future__ import annotations

import abc
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from sam2_rt.io.image_messages import ImageConversionError, compressed_to_rgb, image_to_rgb

logger = logging.getLogger(__name__)

# frame_id of the frames of sources that have none (files, folders, cameras, streams).
DEFAULT_FRAME_ID = "camera"
IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_MSGTYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
BAG_SUFFIXES = (".mcap", ".db3")
# Frame rate of an image folder when none is given (only timestamps depend on it).
DEFAULT_FOLDER_FPS = 30.0


class VideoSourceError(RuntimeError):
    """An input cannot be opened or read; the message names the input and the reason in one line."""


@dataclass(frozen=True)
class BagMessage:
    """The recorded message a frame was decoded from (rosbag2 sources only)."""

    topic: str
    msgtype: str  # "sensor_msgs/msg/Image" or "sensor_msgs/msg/CompressedImage"
    log_time_ns: int  # when the recorder received it
    raw: bytes  # the CDR-serialised message, as recorded


@dataclass(frozen=True)
class VideoFrame:
    """One frame of a source.

    Attributes:
      index: 0, 1, ... in the order the source gives them.
      rgb: (H, W, 3) uint8 RGB pixels.
      time_s: seconds since the source's first frame (from the header stamps of a bag, index / fps for files
        and folders, the monotonic clock for cameras and streams).
      stamp_ns: absolute time in ns: the header stamp of a bag message, the wall clock at capture for cameras
        and streams, time_s for files and folders.
      frame_id: the header frame_id of a bag message, DEFAULT_FRAME_ID elsewhere.
      message: the recorded message (rosbag2 sources), None elsewhere.
    """

    index: int
    rgb: np.ndarray
    time_s: float
    stamp_ns: int
    frame_id: str
    message: Optional[BagMessage] = None


class FrameSource(abc.ABC):
    """Frames of one input, iterated once.

    Attributes:
      kind: "video", "folder", "camera", "stream" or "rosbag2".
      name: the input as the user gave it (with the topic for bags), for messages.
      size: (H, W) of the first frame.
      fps: frames per second (of the file, the camera, the folder's setting, or estimated from a bag's
        metadata); None when unknown.
      num_frames: frames in the input if known in advance (files, folders, bags), None for live sources.
      live: True for cameras and streams (no end, no length).
      ended_early: the input ended before num_frames (a file cut short or damaged; a warning was logged).
    """

    kind: str = ""
    live: bool = False

    def __init__(self, name: str, first: VideoFrame, fps: Optional[float], num_frames: Optional[int]) -> None:
        self.name = name
        self.size: Tuple[int, int] = (int(first.rgb.shape[0]), int(first.rgb.shape[1]))
        self.fps = fps
        self.num_frames = num_frames
        self.ended_early = False
        self._first: Optional[VideoFrame] = first

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._first is None:
            raise VideoSourceError(f"{self.name}: a source can be iterated only once")
        frame: Optional[VideoFrame]
        frame, self._first = self._first, None
        while frame is not None:
            yield frame
            frame = self._read(frame.index + 1)

    @abc.abstractmethod
    def _read(self, index: int) -> Optional[VideoFrame]:
        """The next frame (it gets `index`), or None at the end of the input."""

    def close(self) -> None:
        """Release the device or file (idempotent)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One line: kind, name, size, rate, length."""
        height, width = self.size
        rate = f"{self.fps:.3g} fps" if self.fps else "unknown rate"
        length = "live" if self.live else (f"{self.num_frames} frames" if self.num_frames else "length unknown")
        return f"{self.kind} {self.name}: {width}x{height}, {rate}, {length}"


# --------------------------------------------------------------------------- OpenCV: files, cameras, streams


class _OpenCVSource(FrameSource):
    """A video file, camera index or stream URL read with cv2.VideoCapture."""

    def __init__(self, target: Union[int, str], kind: str, live: bool) -> None:
        self.kind, self.live = kind, live
        name = f"camera {target}" if isinstance(target, int) else str(target)
        self._capture = _open_capture(target, name)
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0) or None
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._fps_for_time = fps
        self._start = time.monotonic()
        first = self._read(0)
        if first is None:
            self.close()
            raise VideoSourceError(f"{name}: opened, but no frame could be read from it")
        super().__init__(name, first, fps, None if live or count <= 0 else count)

    def _read(self, index: int) -> Optional[VideoFrame]:
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            # OpenCV ends a file the same way at its end and at a frame it cannot decode: the count the file
            # declares tells them apart.
            declared = getattr(self, "num_frames", None)  # unknown while the first frame is read
            if declared is not None and index < declared:
                self.ended_early = True
                logger.warning("%s: the video ended after %d of the %d frames it declares (the file is cut short "
                               "or damaged): the last %d were not read", self.name, index, declared,
                               declared - index)
            return None
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.live:
            if index == 0:
                self._start = time.monotonic()
            time_s = time.monotonic() - self._start
            return VideoFrame(index, rgb, time_s, time.time_ns(), DEFAULT_FRAME_ID)
        if self._fps_for_time:
            time_s = index / self._fps_for_time
        else:
            time_s = float(self._capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
        return VideoFrame(index, rgb, time_s, int(round(time_s * 1e9)), DEFAULT_FRAME_ID)

    def close(self) -> None:
        self._capture.release()


def _open_capture(target: Union[int, str], name: str) -> cv2.VideoCapture:
    """cv2.VideoCapture of target, or VideoSourceError. OpenCV's own warnings are silenced while it tries
    (they repeat our message in several lines)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        capture = cv2.VideoCapture(target)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if capture.isOpened():
        return capture
    if isinstance(target, int):
        found = [str(path) for path in sorted(Path("/dev").glob("video*"))]
        listing = ", ".join(found) if found else "no /dev/video* devices here"
        raise VideoSourceError(f"cannot open camera {target}: no such camera, or it is busy ({listing})")
    raise VideoSourceError(f"cannot open {name}: not a video OpenCV can read, or the stream is unreachable")


# --------------------------------------------------------------------------- image folders


def _natural_key(path: Path) -> List[Union[int, str]]:
    """Sort key that puts frame2.png before frame10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class _FolderSource(FrameSource):
    """The images of a folder (IMAGE_SUFFIXES), in natural name order, at a given frame rate."""

    kind = "folder"

    def __init__(self, folder: Path, fps: float) -> None:
        if fps <= 0:
            raise VideoSourceError(f"{folder}: the frame rate of an image folder must be > 0, got {fps}")
        self._files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not self._files:
            raise VideoSourceError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self._fps = fps
        first = self._read(0)
        assert first is not None  # there is at least one file
        super().__init__(str(folder), first, fps, len(self._files))

    def _read(self, index: int) -> Optional[VideoFrame]:
        if index >= len(self._files):
            return None
        path = self._files[index]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoSourceError(f"cannot read image {path}")
        time_s = index / self._fps
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return VideoFrame(index, rgb, time_s, int(round(time_s * 1e9)), DEFAULT_FRAME_ID)


# --------------------------------------------------------------------------- rosbag2


def ros_typestore() -> Any:
    """The rosbags type store for (de)serialising standard ROS 2 messages.

    Humble's definitions: the messages used here (Header, Image, CompressedImage, RegionOfInterest,
    Duration) are the same in every ROS 2 release since, so their type hashes match Jazzy's and Kilted's.
    """
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _decode_message(msgtype: str, msg: Any) -> np.ndarray:
    return image_to_rgb(msg) if msgtype == IMAGE_MSGTYPE else compressed_to_rgb(msg)


class _RosbagSource(FrameSource):
    """The images of one topic of a rosbag2 recording (Image or CompressedImage), in recording order."""

    kind = "rosbag2"

    def __init__(self, path: Path, topic: Optional[str]) -> None:
        from rosbags.rosbag2 import Reader

        try:
            self._reader = Reader(path)
            self._reader.open()
        except Exception as error:  # rosbags raises several types (ReaderError, yaml, sqlite, mcap errors)
            raise VideoSourceError(f"cannot read the rosbag2 recording {path}: {error}") from error
        try:
            self._connections = self._select(path, topic)
            self._label = f"{path} {self._connections[0].topic}"
            self._typestore = ros_typestore()
            self._messages = self._reader.messages(connections=self._connections)
            self._first_stamp: Optional[int] = None
            count = sum(connection.msgcount for connection in self._connections)
            duration_s = self._reader.duration / 1e9
            fps = (count - 1) / duration_s if count > 1 and duration_s > 0 else None
            first = self._read(0)
            if first is None:
                raise VideoSourceError(f"{self._label}: the topic has no messages")
        except BaseException:
            self.close()
            raise
        super().__init__(self._label, first, fps, count)

    def _select(self, path: Path, topic: Optional[str]) -> List[Any]:
        """The connections of the image topic to read (all connections of that topic name)."""
        images = [c for c in self._reader.connections if c.msgtype in (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE)]
        listing = ", ".join(sorted({f"{c.topic} ({c.msgtype.rsplit('/', 1)[-1]})" for c in images})) or "none"
        if topic is None:
            topics = sorted({c.topic for c in images})
            if len(topics) != 1:
                raise VideoSourceError(
                    f"{path} has {len(topics)} image topics; choose one with a topic: {listing}"
                )
            topic = topics[0]
            logger.info("reading the only image topic of %s: %s", path, topic)
        chosen = [c for c in self._reader.connections if c.topic == topic]
        if not chosen:
            raise VideoSourceError(f"topic {topic} is not in {path}; its image topics: {listing}")
        other = [c.msgtype for c in chosen if c.msgtype not in (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE)]
        if other:
            raise VideoSourceError(
                f"topic {topic} of {path} holds {other[0]}, not sensor_msgs Image or CompressedImage; "
                f"its image topics: {listing}"
            )
        return chosen

    def _read(self, index: int) -> Optional[VideoFrame]:
        try:
            connection, log_time_ns, raw = next(self._messages)
        except StopIteration:
            return None
        msg = self._typestore.deserialize_cdr(raw, connection.msgtype)
        try:
            rgb = _decode_message(connection.msgtype, msg)
        except ImageConversionError as error:
            raise VideoSourceError(f"{self._label}: message {index}: {error}") from error
        stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        if stamp_ns == 0:  # a recorder that leaves headers empty: the receive time is all there is
            stamp_ns = log_time_ns
        if self._first_stamp is None:
            self._first_stamp = stamp_ns
        return VideoFrame(
            index=index,
            rgb=rgb,
            time_s=(stamp_ns - self._first_stamp) / 1e9,
            stamp_ns=stamp_ns,
            frame_id=str(msg.header.frame_id),
            message=BagMessage(connection.topic, connection.msgtype, log_time_ns, bytes(raw)),
        )

    def close(self) -> None:
        if getattr(self, "_reader", None) is not None and self._reader.is_open:
            self._reader.close()


# --------------------------------------------------------------------------- choosing a source


def is_rosbag(path: Path) -> bool:
    """Whether path is a rosbag2 recording: a directory with metadata.yaml, or a .mcap / .db3 file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix.lower() in BAG_SUFFIXES
    )


def open_source(spec: str, topic: Optional[str] = None, fps: Optional[float] = None) -> FrameSource:
    """Open an input by what it is.

    Arguments:
      spec: a camera index ("0"), a stream URL (anything with "://", e.g. rtsp://, http://), a rosbag2
        recording (directory with metadata.yaml, .mcap or .db3 file), a folder of images, or a video file.
      topic: the image topic of a rosbag2 recording (optional when it has exactly one image topic).
      fps: frame rate of an image folder (default DEFAULT_FOLDER_FPS); other sources know their own.
    Raises:
      VideoSourceError: the input does not exist, cannot be opened, has no frames, or the topic is not an
        image topic of the recording.
    """
    path = Path(spec).expanduser()
    if spec.isdigit():
        kind = "camera"
    elif "://" in spec:
        kind = "stream"
    elif not path.exists():
        raise VideoSourceError(f"input {spec} does not exist")
    elif is_rosbag(path):
        return _RosbagSource(path, topic)
    else:
        kind = "folder" if path.is_dir() else "video"
    if topic is not None:
        raise VideoSourceError(f"a topic ({topic}) applies only to rosbag2 recordings; {spec} is a {kind}")
    if kind == "camera":
        return _OpenCVSource(int(spec), kind, live=True)
    if kind == "stream":
        return _OpenCVSource(spec, kind, live=True)
    if kind == "folder":
        return _FolderSource(path, DEFAULT_FOLDER_FPS if fps is None else fps)
    return _OpenCVSource(str(path), kind, live=False)

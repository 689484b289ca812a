"""Pixels of sensor_msgs/Image and sensor_msgs/CompressedImage <-> numpy, from the message fields alone.

No ROS import: the decoders read only the fields (``height``, ``width``, ``encoding``, ``is_bigendian``,
``step``, ``data``; ``format`` and ``data`` of a compressed image), so they serve rclpy messages (the node,
through ``sam2_ros.conversions``) and messages deserialised by the pure-Python ``rosbags`` library
(``sam2_rt.io.video``) alike. The encoders return the fields to put into a message.

Arrays are H x W (one channel) or H x W x C, in the channel order the encoding names (``bgr8`` stays BGR
unless a function says it converts). Invalid input raises :class:`ImageConversionError` with a message
that names the problem; numpy's own IndexError/ValueError never escape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional, Tuple

import cv2
import numpy as np


class ImageConversionError(ValueError):
    """An image message cannot be converted: unknown encoding, inconsistent sizes, undecodable data."""


@dataclass(frozen=True)
class _Encoding:
    channels: int
    dtype: np.dtype


# The encodings we read and write. OpenCV-style names (8UC3 ...) carry no colour order: treated as given.
ENCODINGS: Dict[str, _Encoding] = {
    "rgb8": _Encoding(3, np.dtype(np.uint8)),
    "bgr8": _Encoding(3, np.dtype(np.uint8)),
    "rgba8": _Encoding(4, np.dtype(np.uint8)),
    "bgra8": _Encoding(4, np.dtype(np.uint8)),
    "mono8": _Encoding(1, np.dtype(np.uint8)),
    "8UC1": _Encoding(1, np.dtype(np.uint8)),
    "8UC3": _Encoding(3, np.dtype(np.uint8)),
    "mono16": _Encoding(1, np.dtype(np.uint16)),
    "16UC1": _Encoding(1, np.dtype(np.uint16)),
}

# Conversions of an 8-bit image to RGB, keyed by encoding; None = already RGB (3 channels).
_TO_RGB: Dict[str, Optional[int]] = {
    "rgb8": None,
    "8UC3": None,  # no colour order is declared: taken as RGB
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
}

COMPRESSED_FORMATS = ("jpeg", "png")


class ImageFields(NamedTuple):
    """The pixel fields of a sensor_msgs/Image (no row padding, little-endian)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def _encoding(name: str) -> _Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {name!r}; supported: {', '.join(sorted(ENCODINGS))}"
        ) from None


def image_to_numpy(msg: Any) -> np.ndarray:
    """Decode the pixels of a ``sensor_msgs/Image`` (any object with its fields) into an array.

    Arguments:
      msg: the image; ``step`` may include row padding; ``is_bigendian`` is honoured for 16-bit data;
        ``data`` is bytes, a list of ints or a uint8 array.
    Returns:
      (H, W) for one channel or (H, W, C), dtype uint8 or uint16 (native byte order), channel order as the
      encoding names it. The array does not share memory with the message.
    Raises:
      ImageConversionError: unknown encoding, zero size, ``step`` smaller than a row, data shorter than
      ``step * height``.
    """
    enc = _encoding(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    row_bytes = width * enc.channels * enc.dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than one row of {width} px x {enc.channels} ch x "
            f"{enc.dtype.itemsize} B = {row_bytes} B ({msg.encoding})"
        )
    data = _byte_view(msg.data)
    if len(data) < step * height:
        raise ImageConversionError(
            f"image data has {len(data)} bytes, expected step*height = {step}*{height} = {step * height}"
        )
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    wire_dtype = enc.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    # astype copies into a native-order, unpadded array that no longer aliases the message buffer.
    array = rows[:, :row_bytes].view(wire_dtype).reshape(height, width, enc.channels).astype(enc.dtype)
    return array[:, :, 0] if enc.channels == 1 else array


def encode_image(array: np.ndarray, encoding: str) -> ImageFields:
    """The fields of a ``sensor_msgs/Image`` holding `array` (no row padding, little-endian).

    Arguments:
      array: (H, W) or (H, W, C) with the channel count and dtype of ``encoding``.
      encoding: one of :data:`ENCODINGS`.
    Raises:
      ImageConversionError: the array does not match the encoding, or has zero size.
    """
    enc = _encoding(encoding)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != enc.channels:
        raise ImageConversionError(
            f"array of shape {array.shape} does not fit encoding {encoding!r} ({enc.channels} channel(s))"
        )
    if array.dtype != enc.dtype:
        raise ImageConversionError(f"array dtype {array.dtype} does not fit encoding {encoding!r} ({enc.dtype})")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    data = np.ascontiguousarray(array, dtype=enc.dtype.newbyteorder("<")).tobytes()
    return ImageFields(height, width, encoding, 0, width * enc.channels * enc.dtype.itemsize, data)


def image_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into the tracker's input: (H, W, 3) uint8 RGB.

    8-bit colour encodings are reordered to RGB (alpha dropped), mono is replicated; 16-bit mono is
    scaled to 8 bits by its full range (>> 8).
    """
    array = image_to_numpy(msg)
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    code = _TO_RGB[msg.encoding]
    return np.ascontiguousarray(array) if code is None else cv2.cvtColor(array, code)


# Decoded pixels a compressed image may have (8192 x 8192: 192 MiB as RGB; an 8K UHD frame has 33 M). A PNG or
# JPEG can declare far more pixels than its bytes suggest (a 30000 x 30000 PNG of one colour is a few MB and
# decodes to 2.5 GiB): the size in its header is checked before OpenCV allocates anything.
MAX_DECODED_PIXELS = 8192 * 8192
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic; not DHT C4, JPG C8, DAC CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RSTn, SOI, EOI.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xDA)])


def compressed_size(data: Any) -> Optional[Tuple[int, int]]:
    """(width, height) declared by a PNG or JPEG header (bytes or a memoryview), without decoding; None for
    other data, or a header that ends before the size."""
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 1 < len(data):
        if data[at] != 0xFF:
            return None  # not at a marker: a corrupt stream (OpenCV reports it)
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        if at + 4 > len(data):
            return None
        if marker in _JPEG_SOF:
            if at + 9 > len(data):
                return None
            return int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(data[at + 5 : at + 7], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg or png, any channel count) to (H, W, 3) uint8 RGB.

    Raises:
      ImageConversionError: empty data, data OpenCV cannot decode, or a header declaring more than
      MAX_DECODED_PIXELS pixels (checked before decoding).
    """
    view = _byte_view(msg.data)
    data = np.frombuffer(view, dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError(f"compressed image ({msg.format!r}) has no data")
    size = compressed_size(view)
    if size is not None and size[0] * size[1] > MAX_DECODED_PIXELS:
        raise ImageConversionError(f"compressed image ({msg.format!r}) declares {size[0]} x {size[1]} pixels, more "
                                   f"than the {MAX_DECODED_PIXELS} this decoder accepts (8192 x 8192)")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"cannot decode compressed image of format {msg.format!r} ({data.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, image_format: str = "jpeg") -> bytes:
    """The ``data`` of a ``sensor_msgs/CompressedImage`` of `image_format` ("jpeg" or "png") holding
    (H, W, 3) uint8 RGB."""
    if image_format not in COMPRESSED_FORMATS:
        raise ImageConversionError(f"unsupported compressed format {image_format!r}; supported: jpeg, png")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ImageConversionError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    ok, buf = cv2.imencode(".jpg" if image_format == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageConversionError(f"OpenCV failed to encode a {rgb.shape} image as {image_format}")
    return buf.tobytes()


def check_label_map(labels: np.ndarray) -> np.ndarray:
    """A label map (pixel = object id, 0 = background) as (H, W) uint16, the pixels of a ``mono16`` image.

    Raises:
      ImageConversionError: not a 2-D integer array, or values outside 0..65535 (object ids are uint16 in
      our messages).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ImageConversionError(f"label map must be a 2-D integer array, got {labels.shape} {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 0xFFFF):
        raise ImageConversionError("label values must be object ids in 0..65535")
    return labels.astype(np.uint16, copy=False)


def encode_label_map(labels: np.ndarray) -> ImageFields:
    """The fields of the ``mono16`` ``sensor_msgs/Image`` of a label map (`check_label_map`): pixel = object
    id, 0 = background; the node's and the rosbag2 recording's ``masks``.

    Raises:
      ImageConversionError: as `check_label_map`, or a label map of zero size.
    """
    return encode_image(check_label_map(labels), "mono16")


def _byte_view(data: Any) -> memoryview:
    """The bytes of a message's ``data`` field (bytes, array.array, list of ints or a numpy array)."""
    if isinstance(data, list):
        data = bytes(data)
    return memoryview(data).cast("B")

"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge (no ROS 2 wheel of it exists).

Arrays are H x W (one channel) or H x W x C, in the channel order the encoding names (``bgr8`` stays BGR
unless a function says it converts). Every function that takes a message validates it first and raises
:class:`ImageConversionError` with a message that names the problem; numpy's own IndexError/ValueError
never escape. The header travels with the image: encoders take the header to stamp the result with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


class ImageConversionError(ValueError):
    """An image message cannot be converted: unknown encoding, inconsistent sizes, undecodable data."""


@dataclass(frozen=True)
class _Encoding:
    channels: int
    dtype: np.dtype


# The encodings we read and write. OpenCV-style names (8UC3 ...) carry no colour order: treated as given.
ENCODINGS: dict[str, _Encoding] = {
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
_TO_RGB = {
    "rgb8": None,
    "8UC3": None,  # no colour order is declared: taken as RGB
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
}


def _encoding(name: str) -> _Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {name!r}; supported: {', '.join(sorted(ENCODINGS))}"
        ) from None


def image_to_numpy(msg: Image) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into an array.

    Arguments:
      msg: the image; ``step`` may include row padding; ``is_bigendian`` is honoured for 16-bit data.
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
    data = memoryview(msg.data).cast("B")
    if len(data) < step * height:
        raise ImageConversionError(
            f"image data has {len(data)} bytes, expected step*height = {step}*{height} = {step * height}"
        )
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    wire_dtype = enc.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    # astype copies into a native-order, unpadded array that no longer aliases the message buffer.
    array = rows[:, :row_bytes].view(wire_dtype).reshape(height, width, enc.channels).astype(enc.dtype)
    return array[:, :, 0] if enc.channels == 1 else array


def numpy_to_image(array: np.ndarray, encoding: str, header: Optional[Header] = None) -> Image:
    """Encode an array as a ``sensor_msgs/Image`` (no row padding, little-endian).

    Arguments:
      array: (H, W) or (H, W, C) with the channel count and dtype of ``encoding``.
      encoding: one of :data:`ENCODINGS`.
      header: copied into the message (stamp and frame_id of the image this one belongs to).
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
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = 0
    msg.step = width * enc.channels * enc.dtype.itemsize
    msg.data = np.ascontiguousarray(array, dtype=enc.dtype.newbyteorder("<")).tobytes()
    return msg


def image_to_rgb(msg: Image) -> np.ndarray:
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


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg or png, any channel count) to (H, W, 3) uint8 RGB.

    Raises:
      ImageConversionError: empty data or data OpenCV cannot decode.
    """
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError(f"compressed image ({msg.format!r}) has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"cannot decode compressed image of format {msg.format!r} ({data.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(rgb: np.ndarray, image_format: str = "jpeg", header: Optional[Header] = None) -> CompressedImage:
    """Encode (H, W, 3) uint8 RGB as a ``sensor_msgs/CompressedImage`` (``jpeg`` or ``png``)."""
    if image_format not in ("jpeg", "png"):
        raise ImageConversionError(f"unsupported compressed format {image_format!r}; supported: jpeg, png")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ImageConversionError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    ok, buf = cv2.imencode(".jpg" if image_format == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageConversionError(f"OpenCV failed to encode a {rgb.shape} image as {image_format}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = image_format
    msg.data = buf.tobytes()
    return msg


def label_image(labels: np.ndarray, header: Optional[Header] = None) -> Image:
    """Encode a label map as a ``mono16`` ``sensor_msgs/Image``: pixel = object id, 0 = background.

    Arguments:
      labels: (H, W) integer array with values in 0..65535 (object ids are uint16 in our messages).
      header: the INPUT image's header, so the mask lines up with the frame it was computed on.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ImageConversionError(f"label map must be a 2-D integer array, got {labels.shape} {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 0xFFFF):
        raise ImageConversionError("label values must be object ids in 0..65535")
    return numpy_to_image(labels.astype(np.uint16, copy=False), "mono16", header)

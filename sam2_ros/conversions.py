"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge (no ROS 2 wheel of it exists).

The pixel codec lives in :mod:`sam2_rt.io.image_messages` (no ROS import; the rosbag2 reader of
``sam2_rt.io.video`` uses it too); this module adds the ROS message types around it. Arrays are H x W (one
channel) or H x W x C, in the channel order the encoding names. Every function that takes a message validates
it first and raises :class:`ImageConversionError` with a message that names the problem. The header travels
with the image: encoders take the header to stamp the result with.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sam2_rt.io.image_messages import (
    ENCODINGS,
    ImageConversionError,
    ImageFields,
    compressed_to_rgb,
    encode_compressed,
    encode_image,
    encode_label_map,
    image_to_numpy,
    image_to_rgb,
)

__all__ = [
    "ENCODINGS",
    "ImageConversionError",
    "compressed_to_rgb",
    "image_to_numpy",
    "image_to_rgb",
    "label_map_to_image",
    "numpy_to_image",
    "rgb_to_compressed",
]


def numpy_to_image(array: np.ndarray, encoding: str, header: Optional[Header] = None) -> Image:
    """Encode an array as a ``sensor_msgs/Image`` (no row padding, little-endian).

    Arguments:
      array: (H, W) or (H, W, C) with the channel count and dtype of ``encoding``.
      encoding: one of :data:`ENCODINGS`.
      header: copied into the message (stamp and frame_id of the image this one belongs to).
    Raises:
      ImageConversionError: the array does not match the encoding, or has zero size.
    """
    return _image_message(encode_image(array, encoding), header)


def _image_message(fields: ImageFields, header: Optional[Header]) -> Image:
    """A ``sensor_msgs/Image`` of encoded pixel fields, stamped with `header` when given."""
    msg = Image(**fields._asdict())
    if header is not None:
        msg.header = header
    return msg


def rgb_to_compressed(rgb: np.ndarray, image_format: str = "jpeg", header: Optional[Header] = None) -> CompressedImage:
    """Encode (H, W, 3) uint8 RGB as a ``sensor_msgs/CompressedImage`` (``jpeg`` or ``png``)."""
    msg = CompressedImage(format=image_format, data=encode_compressed(rgb, image_format))
    if header is not None:
        msg.header = header
    return msg


def label_map_to_image(labels: np.ndarray, header: Optional[Header] = None) -> Image:
    """Encode a label map (made by ``sam2_rt.tracking.transforms.label_image``) as a ``mono16``
    ``sensor_msgs/Image``: pixel = object id, 0 = background.

    Arguments:
      labels: (H, W) integer array with values in 0..65535 (object ids are uint16 in our messages).
      header: the INPUT image's header, so the mask lines up with the frame it was computed on.
    Raises:
      ImageConversionError: not a 2-D integer array of ids, or zero size.
    """
    return _image_message(encode_label_map(labels), header)

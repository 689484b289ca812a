"""sensor_msgs/Image and CompressedImage <-> numpy: every encoding, padding, byte order, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sam2_ros.conversions import (
    ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_numpy,
    image_to_rgb,
    label_map_to_image,
    numpy_to_image,
    rgb_to_compressed,
)
from sam2_rt.io import image_messages
from sam2_rt.io.image_messages import MAX_DECODED_PIXELS, compressed_size, encode_compressed

HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_optical")


def random_array(encoding: str, height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    enc = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width) if enc.channels == 1 else (height, width, enc.channels)
    return rng.integers(0, np.iinfo(enc.dtype).max + 1, size=shape, dtype=enc.dtype)


def padded_message(array: np.ndarray, encoding: str, pad: int, bigendian: bool = False) -> Image:
    """Build a message by hand, with `pad` junk bytes at the end of every row."""
    enc = ENCODINGS[encoding]
    height, width = array.shape[:2]
    wire = array.astype(enc.dtype.newbyteorder(">" if bigendian else "<"))
    rows = wire.reshape(height, -1).view(np.uint8).reshape(height, -1)
    junk = np.full((height, pad), 0xAB, dtype=np.uint8)
    msg = Image(header=HEADER, height=height, width=width, encoding=encoding, is_bigendian=int(bigendian))
    msg.step = rows.shape[1] + pad
    msg.data = np.concatenate([rows, junk], axis=1).tobytes()
    return msg


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding_keeps_pixels_and_header(encoding: str) -> None:
    array = random_array(encoding)
    msg = numpy_to_image(array, encoding, HEADER)
    assert msg.header == HEADER
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    back = image_to_numpy(msg)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_padded_step_is_honoured(encoding: str) -> None:
    array = random_array(encoding, seed=1)
    np.testing.assert_array_equal(image_to_numpy(padded_message(array, encoding, pad=6)), array)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_big_endian_16_bit(encoding: str) -> None:
    array = np.array([[0x0102, 0xFF00], [0x00FF, 0x1234]], dtype=np.uint16)
    msg = padded_message(array, encoding, pad=2, bigendian=True)
    assert bytes(msg.data[:2]) == b"\x01\x02"
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_decoded_array_does_not_alias_the_message() -> None:
    array = random_array("rgb8")
    msg = numpy_to_image(array, "rgb8")
    decoded = image_to_numpy(msg)
    msg.data[0] = (int(msg.data[0]) + 1) % 256
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(
    "encoding,expected",
    [
        ("rgb8", lambda a: a),
        ("8UC3", lambda a: a),
        ("bgr8", lambda a: a[:, :, ::-1]),
        ("rgba8", lambda a: a[:, :, :3]),
        ("bgra8", lambda a: a[:, :, 2::-1]),
        ("mono8", lambda a: np.repeat(a[:, :, None], 3, axis=2)),
        ("8UC1", lambda a: np.repeat(a[:, :, None], 3, axis=2)),
        ("mono16", lambda a: np.repeat((a >> 8).astype(np.uint8)[:, :, None], 3, axis=2)),
        ("16UC1", lambda a: np.repeat((a >> 8).astype(np.uint8)[:, :, None], 3, axis=2)),
    ],
)
def test_image_to_rgb_gives_rgb_uint8(encoding: str, expected) -> None:
    array = random_array(encoding, seed=2)
    rgb = image_to_rgb(numpy_to_image(array, encoding))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected(array))


def make_valid_rgb8() -> Image:
    return numpy_to_image(random_array("rgb8"), "rgb8", HEADER)


@pytest.mark.parametrize(
    "corrupt,needle",
    [
        (lambda m: setattr(m, "encoding", "yuv422_yuy2_weird"), "unsupported image encoding"),
        (lambda m: setattr(m, "encoding", ""), "unsupported image encoding"),
        (lambda m: setattr(m, "data", bytes(m.data[: m.step * m.height - 1])), "expected step\\*height"),
        (lambda m: setattr(m, "step", m.width * 3 - 1), "smaller than one row"),
        (lambda m: setattr(m, "height", 0), "zero size"),
        (lambda m: setattr(m, "width", 0), "zero size"),
        (lambda m: setattr(m, "data", b""), "expected step\\*height"),
    ],
)
def test_malformed_image_raises_the_dedicated_error(corrupt, needle: str) -> None:
    msg = make_valid_rgb8()
    corrupt(msg)
    for decode in (image_to_numpy, image_to_rgb):
        with pytest.raises(ImageConversionError, match=needle):
            decode(msg)


def test_encoding_an_array_that_does_not_fit_raises_the_dedicated_error() -> None:
    with pytest.raises(ImageConversionError, match="does not fit"):
        numpy_to_image(np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(ImageConversionError, match="dtype"):
        numpy_to_image(np.zeros((4, 4), np.float32), "mono8")
    with pytest.raises(ImageConversionError, match="zero size"):
        numpy_to_image(np.zeros((0, 4, 3), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match="unsupported"):
        numpy_to_image(np.zeros((4, 4), np.uint8), "32FC1")


def test_png_round_trip_is_lossless_and_keeps_header() -> None:
    rgb = random_array("rgb8", 16, 20, seed=3)
    msg = rgb_to_compressed(rgb, "png", HEADER)
    assert msg.format == "png" and msg.header == HEADER
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


def test_jpeg_round_trip_is_close() -> None:
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 40)
    rgb[:, 24:] = (20, 160, 220)
    back = compressed_to_rgb(rgb_to_compressed(rgb, "jpeg", HEADER))
    assert back.shape == rgb.shape
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 4.0


@pytest.mark.parametrize("data", [b"", b"this is not a jpeg"])
def test_undecodable_compressed_image_raises_the_dedicated_error(data: bytes) -> None:
    msg = CompressedImage(header=HEADER, format="jpeg")
    msg.data = data
    with pytest.raises(ImageConversionError, match="compressed image"):
        compressed_to_rgb(msg)


def test_label_map_to_image_is_mono16_with_object_ids_and_header() -> None:
    labels = np.zeros((6, 9), np.int32)
    labels[1:3, 2:5] = 7
    labels[4, 8] = 65535
    msg = label_map_to_image(labels, HEADER)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono16", 6, 9, 18)
    assert msg.header == HEADER
    np.testing.assert_array_equal(image_to_numpy(msg), labels)


def test_label_map_to_image_rejects_values_that_are_not_ids() -> None:
    with pytest.raises(ImageConversionError, match="0..65535"):
        label_map_to_image(np.full((2, 2), 70000, np.int64))
    with pytest.raises(ImageConversionError, match="2-D integer"):
        label_map_to_image(np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_compressed_size_reads_the_header_without_decoding(image_format: str) -> None:
    data = encode_compressed(np.zeros((23, 37, 3), dtype=np.uint8), image_format)
    assert compressed_size(data) == compressed_size(memoryview(data)) == (37, 23)
    assert compressed_size(data[:12]) is None and compressed_size(b"GIF89a" + data) is None


def declaring(image_format: str, width: int, height: int) -> bytes:
    """A small encoded image whose header is edited to declare width x height pixels."""
    data = bytearray(encode_compressed(np.zeros((16, 16, 3), dtype=np.uint8), image_format))
    if image_format == "png":
        data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    else:
        frame = data.index(b"\xff\xc0")  # baseline start of frame: length, precision, height, width
        data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    assert compressed_size(bytes(data)) == (width, height)
    return bytes(data)


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_a_compressed_image_declaring_too_many_pixels_is_refused_before_decoding(image_format: str,
                                                                                 monkeypatch) -> None:
    # 30000 x 30000 would decode to 2.5 GiB: refused from the header, OpenCV never called.
    monkeypatch.setattr(image_messages.cv2, "imdecode", lambda *args: pytest.fail("decoded"))
    msg = CompressedImage(format=image_format, data=declaring(image_format, 30000, 30000))
    with pytest.raises(ImageConversionError, match="declares 30000 x 30000 pixels"):
        compressed_to_rgb(msg)
    assert MAX_DECODED_PIXELS == 8192 * 8192
    # One pixel row more than the limit allows is refused too; the limit itself passes to OpenCV.
    with pytest.raises(ImageConversionError, match="declares 8192 x 8193 pixels"):
        compressed_to_rgb(CompressedImage(format=image_format, data=declaring(image_format, 8192, 8193)))
    with pytest.raises(pytest.fail.Exception, match="decoded"):
        compressed_to_rgb(CompressedImage(format=image_format, data=declaring(image_format, 8192, 8192)))

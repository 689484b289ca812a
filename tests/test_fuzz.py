"""Property-based fuzzing (hypothesis) of the node's pure input paths: image messages and prompts.

Properties: a malformed input raises only the dedicated error (`ImageConversionError` for images,
`TrackerInputError` for prompts) and changes nothing; a well-formed one gives the correct result. Each test has a
fixed example budget and a derandomised search (no example database), so CI runs the same examples every time.
The node itself under fuzzed inputs: tests/test_node_faults.py.
"""
from __future__ import annotations

import math
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup): the messages are ROS messages")
from geometry_msgs.msg import Point32  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from sam2_ros.conversions import (  # noqa: E402
    ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_numpy,
    image_to_rgb,
    label_map_to_image,
    numpy_to_image,
    rgb_to_compressed,
)
from sam2_ros.msg import Prompt  # noqa: E402
from sam2_ros.requests import ObjectBook, PromptRequest, QueuedPrompt  # noqa: E402
from sam2_rt.weights.checkpoint import random_model  # noqa: E402
from sam2_rt import MAX_OBJECT_ID, Tracker, TrackerConfig, TrackerInputError  # noqa: E402


def fuzz(examples: int):
    """A fixed, derandomised budget of `examples` examples (no deadline: the CI runner is a shared machine)."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def seeded_bytes(seed: int, length: int) -> bytes:
    """`length` pseudo-random bytes (hypothesis draws the seed; large buffers are not drawn byte by byte)."""
    return np.random.default_rng(seed).bytes(length)


# --------------------------------------------------------------------------- sensor_msgs/Image

ODD_ENCODINGS = ("", "yuv422", "32FC1", "RGB8", "bgr16", "mono8 ", "16UC3", "bayer_rggb8", "64FC1")
UINT32 = 2**32 - 1
HUGE_SIDES = (2**16, 2**31 - 1, UINT32)
# Faults planted in an otherwise decodable image ("anything": every field drawn at random).
IMAGE_FAULTS = ("none", "encoding", "zero_size", "short_step", "short_data", "huge_size", "anything")


@st.composite
def image_messages(draw) -> Tuple[Image, str]:
    """(message, fault): a decodable sensor_msgs/Image (any encoding, size, row padding and byte order flag) with
    one of IMAGE_FAULTS planted in it."""
    fault = draw(st.sampled_from(IMAGE_FAULTS))
    if fault == "anything":
        return draw(any_image_messages()), fault
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    enc = ENCODINGS[encoding]
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    row = width * enc.channels * enc.dtype.itemsize
    step = row + draw(st.integers(0, 8))
    length = step * height + draw(st.integers(0, 4))
    if fault == "encoding":
        encoding = draw(st.one_of(st.sampled_from(ODD_ENCODINGS), st.text(max_size=6)).filter(
            lambda name: name not in ENCODINGS))
    elif fault == "zero_size":
        height, width = draw(st.sampled_from([(0, width), (height, 0), (0, 0)]))
    elif fault == "short_step":
        step = draw(st.integers(0, row - 1))
    elif fault == "short_data":
        length = draw(st.integers(0, step * height - 1))
    elif fault == "huge_size":
        if draw(st.booleans()):
            height = draw(st.sampled_from(HUGE_SIDES))
        else:
            width = draw(st.sampled_from(HUGE_SIDES))
    msg = Image(height=height, width=width, encoding=encoding, step=step,
                is_bigendian=draw(st.sampled_from([0, 1, 255])))
    msg.data = seeded_bytes(draw(st.integers(0, 2**16)), length)
    return msg, fault


@st.composite
def any_image_messages(draw) -> Image:
    """A sensor_msgs/Image with any encoding, sizes, step, byte order flag and data length."""
    encoding = draw(st.one_of(st.sampled_from(sorted(ENCODINGS) + list(ODD_ENCODINGS)), st.text(max_size=6)))
    sides = st.one_of(st.integers(0, 9), st.sampled_from(HUGE_SIDES))
    height, width = draw(sides), draw(sides)
    msg = Image(height=height, width=width, encoding=encoding, step=draw(st.integers(0, UINT32)),
                is_bigendian=draw(st.integers(0, 255)))
    msg.data = seeded_bytes(draw(st.integers(0, 2**16)), draw(st.integers(0, 300)))
    return msg


def expected_pixels(msg: Image) -> Optional[np.ndarray]:
    """The pixels the message declares, read row by row; None if it is malformed (the spec of image_to_numpy)."""
    enc = ENCODINGS.get(msg.encoding)
    if enc is None or msg.height == 0 or msg.width == 0:
        return None
    row = msg.width * enc.channels * enc.dtype.itemsize
    data = bytes(msg.data)
    if msg.step < row or len(data) < msg.step * msg.height:
        return None
    wire = enc.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    rows = [np.frombuffer(data[r * msg.step: r * msg.step + row], dtype=wire) for r in range(msg.height)]
    pixels = np.stack(rows).astype(enc.dtype).reshape(msg.height, msg.width, enc.channels)
    return pixels[:, :, 0] if enc.channels == 1 else pixels


def expected_rgb(encoding: str, pixels: np.ndarray) -> np.ndarray:
    """What image_to_rgb gives for decoded `pixels` of `encoding`: (H, W, 3) uint8 RGB."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if encoding.startswith("bgr"):
        return pixels[:, :, 2::-1]
    return pixels[:, :, :3]


@fuzz(600)
@given(case=image_messages())
def test_fuzzed_image_messages_decode_to_their_pixels_or_raise_the_dedicated_error(case: Tuple[Image, str]) -> None:
    msg, fault = case
    expected = expected_pixels(msg)
    event(f"{fault}: {'decodable' if expected is not None else 'malformed'}")
    assert fault == "anything" or (expected is None) == (fault != "none"), "the planted fault is not one"
    for decode in (image_to_numpy, image_to_rgb):
        if expected is None:
            with pytest.raises(ImageConversionError):
                decode(msg)
            continue
        array = decode(msg)
        want = expected if decode is image_to_numpy else expected_rgb(msg.encoding, expected)
        assert array.dtype == want.dtype and array.shape == want.shape
        np.testing.assert_array_equal(array, want)


# --------------------------------------------------------------------------- sensor_msgs/CompressedImage


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring `width` x `height` RGB, and nothing else."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))


@st.composite
def compressed_messages(draw) -> Tuple[CompressedImage, str, np.ndarray]:
    """(message, how it was made, the BGR image it started from): whole, truncated, corrupted or random bytes
    and PNG headers declaring any size."""
    image_format = draw(st.sampled_from(["jpeg", "png"]))
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    image = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, buffer = cv2.imencode(".jpg" if image_format == "jpeg" else ".png", image)
    assert ok
    encoded = buffer.tobytes()
    kind = draw(st.sampled_from(["whole", "truncated", "corrupted", "random", "png_header"]))
    if kind == "whole":
        data = encoded
    elif kind == "truncated":
        data = encoded[: draw(st.integers(0, len(encoded) - 1))]
    elif kind == "corrupted":
        corrupted = bytearray(encoded)
        for _ in range(draw(st.integers(1, 8))):
            corrupted[draw(st.integers(0, len(corrupted) - 1))] = draw(st.integers(0, 255))
        data = bytes(corrupted)
    elif kind == "random":
        data = draw(st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"])) + draw(st.binary(max_size=300))
    else:
        data = png_header_only(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)))
    msg = CompressedImage(format=draw(st.sampled_from([image_format, "", "tiff"])))
    msg.data = data
    return msg, kind, image


@fuzz(400)
@given(case=compressed_messages())
def test_fuzzed_compressed_images_decode_to_rgb_or_raise_the_dedicated_error(case) -> None:
    msg, kind, image = case
    try:
        rgb = compressed_to_rgb(msg)
    except ImageConversionError:
        event(f"{kind}: refused")
        assert kind != "whole", "a whole encoded image was refused"
        return
    event(f"{kind}: decoded")
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
    if kind == "whole":
        assert rgb.shape == image.shape
        if msg.data[:4] == b"\x89PNG":  # lossless: exactly the pixels, in RGB order
            np.testing.assert_array_equal(rgb, image[:, :, ::-1])


# --------------------------------------------------------------------------- arrays -> messages

ARRAY_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32, np.bool_])
SMALL_ARRAYS = ARRAY_DTYPES.flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
)


@fuzz(300)
@given(array=SMALL_ARRAYS, encoding=st.sampled_from(sorted(ENCODINGS) + ["yuv422", ""]))
def test_fuzzed_arrays_encode_to_images_that_decode_back_or_raise_the_dedicated_error(array, encoding) -> None:
    try:
        msg = numpy_to_image(array, encoding)
    except ImageConversionError:
        enc = ENCODINGS.get(encoding)
        fits = (enc is not None and array.dtype == enc.dtype and array.size > 0
                and (array.ndim == 2 and enc.channels == 1 or array.ndim == 3 and array.shape[2] == enc.channels))
        assert not fits, f"{array.shape} {array.dtype} refused as {encoding}"
        return
    np.testing.assert_array_equal(image_to_numpy(msg), array)


@fuzz(200)
@given(array=SMALL_ARRAYS, image_format=st.sampled_from(["jpeg", "png", "bmp"]))
def test_fuzzed_arrays_compress_to_decodable_images_or_raise_the_dedicated_error(array, image_format) -> None:
    try:
        msg = rgb_to_compressed(array, image_format)
    except ImageConversionError:
        return
    assert array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    assert compressed_to_rgb(msg).shape == array.shape


@fuzz(200)
@given(labels=st.one_of(SMALL_ARRAYS, hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
                                                 elements=st.integers(-2, 70_000))))
def test_fuzzed_label_maps_become_mono16_images_or_raise_the_dedicated_error(labels) -> None:
    try:
        msg = label_map_to_image(labels)
    except ImageConversionError:
        valid = (labels.ndim == 2 and labels.size > 0 and np.issubdtype(labels.dtype, np.integer)
                 and labels.min() >= 0 and labels.max() <= 0xFFFF)
        assert not valid, labels
        return
    assert msg.encoding == "mono16"
    np.testing.assert_array_equal(image_to_numpy(msg), labels)


# --------------------------------------------------------------------------- prompts

FRAME = (24, 32)  # (H, W) of the image the prompts refer to
HEIGHT, WIDTH = FRAME
IMAGE_SIZE = 64
MAX_OBJECTS = 3
FLOAT32_MAX = float(np.finfo(np.float32).max)
OUTSIDE = st.one_of(st.floats(-1e6, -1e-3), st.floats(WIDTH + 1e-3, 1e6))


@pytest.fixture(scope="module")
def tracker() -> Tracker:
    return Tracker(random_model("sam2.1_hiera_tiny", image_size=IMAGE_SIZE), TrackerConfig(max_objects=MAX_OBJECTS))


def float32(value: float) -> float:
    """The float32 a message field stores (overflow gives an infinity, as a C sender's cast would)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


@dataclass
class PromptContent:
    """A prompt's content as `Tracker.add_prompt` takes it (pixels of FRAME), with the fault planted in it."""

    fault: str
    points: Optional[np.ndarray] = None  # (N, 2) float64 x, y
    labels: Optional[np.ndarray] = None  # (N,) int64
    box: Optional[np.ndarray] = None  # (4,) float64
    mask: Optional[np.ndarray] = None  # (H, W) bool


# Faults of the content, valid ids and modes otherwise ("none": a valid prompt).
CONTENT_FAULTS = ("none", "nan", "infinity", "float32_max", "outside", "no_content", "labels_mismatch",
                  "label_value", "box_inverted", "mask_size", "mask_with_points")
COORDINATE_FAULTS = ("nan", "infinity", "float32_max", "outside")


@st.composite
def prompt_contents(draw) -> PromptContent:
    """Clicks, a box, both, a mask or 200 clicks inside FRAME, with one of CONTENT_FAULTS planted."""
    fault = draw(half_valid(CONTENT_FAULTS))
    kinds = ["points", "box", "points_and_box", "mask", "many_points"]
    if fault in COORDINATE_FAULTS:
        kinds = ["points", "box", "points_and_box"]
    elif fault in ("labels_mismatch", "label_value"):
        kinds = ["points", "points_and_box", "many_points"]
    elif fault == "box_inverted":
        kinds = ["box", "points_and_box"]
    elif fault in ("mask_size", "mask_with_points"):
        kinds = ["mask"]
    kind = draw(st.sampled_from(kinds))
    content = PromptContent(fault)
    if kind == "many_points":  # drawn from a seed: 400 separate draws would make the example slow to generate
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        content.points = rng.uniform(0, 1, (200, 2)) * (WIDTH, HEIGHT)
        content.labels = rng.integers(0, 2, 200)
    elif "points" in kind:
        count = draw(st.integers(1, 5))
        xs = draw(st.lists(st.floats(0, WIDTH), min_size=count, max_size=count))
        ys = draw(st.lists(st.floats(0, HEIGHT), min_size=count, max_size=count))
        content.points = np.stack([xs, ys], axis=1)
        content.labels = np.asarray(draw(st.lists(st.integers(0, 1), min_size=count, max_size=count)))
    if "box" in kind:
        x0, y0 = draw(st.floats(0, WIDTH - 1)), draw(st.floats(0, HEIGHT - 1))
        content.box = np.array([x0, y0, min(WIDTH, x0 + draw(st.floats(0.5, WIDTH))),
                                min(HEIGHT, y0 + draw(st.floats(0.5, HEIGHT)))])
    if kind == "mask":
        content.mask = np.random.default_rng(draw(st.integers(0, 99))).random(FRAME) < 0.3
    if fault in COORDINATE_FAULTS:
        target = content.points if content.points is not None else content.box
        value = {"nan": math.nan, "infinity": draw(st.sampled_from([math.inf, -math.inf])),
                 "float32_max": draw(st.sampled_from([FLOAT32_MAX, -FLOAT32_MAX])), "outside": draw(OUTSIDE)}[fault]
        target.reshape(-1)[draw(st.integers(0, target.size - 1))] = value
    elif fault == "no_content":
        content = PromptContent(fault)
    elif fault == "labels_mismatch":
        content.labels = content.labels[:-1] if draw(st.booleans()) else np.append(content.labels, 1)
    elif fault == "label_value":
        content.labels[draw(st.integers(0, len(content.labels) - 1))] = draw(
            st.one_of(st.integers(2, 127), st.integers(-128, -1)))
    elif fault == "box_inverted":
        content.box[2] = content.box[0] - draw(st.floats(0, 5))
    elif fault == "mask_size":
        content.mask = np.zeros(draw(st.sampled_from([(HEIGHT + 1, WIDTH), (HEIGHT, WIDTH - 1), (1, 1)])), bool)
    elif fault == "mask_with_points":
        content.points, content.labels = np.array([[1.0, 1.0]]), np.array([1])
    return content


def half_valid(faults: Tuple[str, ...]):
    """faults[0] ("none") half the time, else one of the others: valid inputs stay frequent."""
    return st.one_of(st.just(faults[0]), st.sampled_from(faults[1:]))


def valid_id_and_mode(draw, known) -> Tuple[int, int]:
    """An object id and a mode that suit the known ids (a new id only while there is room)."""
    new_ids = [obj_id for obj_id in range(1, 10) if obj_id not in known]
    object_id = draw(st.sampled_from(list(known) + (new_ids if len(known) < MAX_OBJECTS else [])))
    modes = [Prompt.MODE_ADD, Prompt.MODE_REPLACE] + ([Prompt.MODE_REFINE] if object_id in known else [])
    return object_id, draw(st.sampled_from(modes))


KNOWN_IDS = st.lists(st.integers(1, 9), unique=True, max_size=MAX_OBJECTS)
# Faults of the message around a valid content.
MESSAGE_FAULTS = ("none", "id_zero", "mode", "refine_unknown", "over_max_objects", "queue_full", "mask_channels")


@dataclass
class MessageCase:
    """A Prompt message for a book that holds `known` ids with `room` free queue places, and its fault."""

    msg: Prompt
    known: List[int]
    room: int
    fault: str


@st.composite
def prompt_message_cases(draw) -> MessageCase:
    """A valid Prompt message with one fault of CONTENT_FAULTS or MESSAGE_FAULTS planted (or none)."""
    content = draw(prompt_contents())
    fault = draw(half_valid(MESSAGE_FAULTS)) if content.fault == "none" else content.fault
    known = draw(KNOWN_IDS)
    object_id, mode = valid_id_and_mode(draw, known)
    room, mask_encoding = 1, "mono8"
    if fault == "id_zero":
        object_id = 0
    elif fault == "mode":
        mode = draw(st.integers(3, 255))
    elif fault == "refine_unknown":
        object_id, mode = draw(st.sampled_from([obj_id for obj_id in range(1, 10) if obj_id not in known])), 1
    elif fault == "over_max_objects":
        known, object_id = list(range(1, MAX_OBJECTS + 1)), draw(st.integers(MAX_OBJECTS + 1, 2**16 - 1))
        mode = draw(st.sampled_from([Prompt.MODE_ADD, Prompt.MODE_REPLACE]))
    elif fault == "queue_full":
        room = 0
    elif fault == "mask_channels":
        content, mask_encoding = PromptContent(fault, mask=np.ones(FRAME, bool)), "rgb8"
    msg = Prompt(object_id=object_id, mode=mode)
    if content.points is not None:
        msg.points = [Point32(x=float32(x), y=float32(y)) for x, y in content.points]
    if content.labels is not None:
        msg.labels = [int(label) for label in content.labels]
    if content.box is not None:
        msg.has_box, msg.box = True, [float32(v) for v in content.box]
    if content.mask is not None:
        pixels = content.mask.astype(np.uint8) * 255
        msg.mask = numpy_to_image(np.repeat(pixels[:, :, None], 3, axis=2) if mask_encoding == "rgb8" else pixels,
                                  mask_encoding)
    return MessageCase(msg, known, room, fault)


@st.composite
def any_prompt_message_cases(draw) -> MessageCase:
    """A Prompt message with any field values the message types allow, for a book with any ids and room."""
    msg = Prompt(object_id=draw(st.one_of(st.integers(0, MAX_OBJECTS + 2), st.integers(0, 2**16 - 1))),
                 mode=draw(st.one_of(st.integers(0, 2), st.integers(0, 255))))
    coordinates = st.one_of(st.floats(-2.0, 40.0), st.floats()).map(float32)
    count = draw(st.integers(0, 4))
    msg.points = [Point32(x=draw(coordinates), y=draw(coordinates)) for _ in range(count)]
    label_count = draw(st.sampled_from([count, count, max(0, count - 1), count + 1]))
    msg.labels = draw(st.lists(st.one_of(st.integers(0, 1), st.integers(-128, 127)),
                               min_size=label_count, max_size=label_count))
    msg.has_box = draw(st.booleans())
    msg.box = [draw(coordinates) for _ in range(4)]
    if draw(st.integers(0, 3)) == 0:
        msg.mask = draw(any_mask_images())
    return MessageCase(msg, draw(KNOWN_IDS), draw(st.integers(0, 2)), "anything")


@st.composite
def any_mask_images(draw) -> Image:
    """A mask image: the frame's size or not, one channel or not, 0/1/255 pixels, or a malformed message."""
    encoding = draw(st.sampled_from(["mono8", "8UC1", "mono16", "16UC1", "rgb8", "32FC1"]))
    height = draw(st.sampled_from([HEIGHT, HEIGHT + 1, 1, 0]))
    width = draw(st.sampled_from([WIDTH, WIDTH - 1, 1]))
    enc = ENCODINGS.get(encoding)
    if enc is None or height == 0:
        msg = Image(height=height, width=width, encoding=encoding, step=4 * width)
        msg.data = seeded_bytes(draw(st.integers(0, 99)), msg.step * height)
        return msg
    shape = (height, width) if enc.channels == 1 else (height, width, enc.channels)
    values = np.asarray(draw(st.sampled_from([[0, 1], [0, 255], [0]])), dtype=enc.dtype)
    return numpy_to_image(np.random.default_rng(draw(st.integers(0, 99))).choice(values, size=shape), encoding)


def book_state(book: ObjectBook) -> Tuple[Any, ...]:
    return book.object_ids(), book.queued()


@fuzz(600)
@given(case=st.one_of(prompt_message_cases(), prompt_message_cases(), any_prompt_message_cases()))
def test_fuzzed_prompt_messages_are_queued_valid_or_rejected_with_the_book_unchanged(tracker, case) -> None:
    """The node's path: PromptRequest.from_message + ObjectBook.submit_prompt (which uses Tracker.prepare_prompt)."""
    msg = case.msg
    book = ObjectBook(tracker, max_queued=len(case.known) + case.room)
    book.set_frame_size(FRAME)
    for object_id in case.known:
        book.submit_prompt(PromptRequest(object_id, Prompt.MODE_ADD, np.array([[1.0, 1.0]]), np.array([1]), None,
                                         None))
    before = book_state(book)
    try:
        answer = book.submit_prompt(PromptRequest.from_message(msg))
    except TrackerInputError:
        event(f"{case.fault}: rejected")
        assert case.fault != "none", "a valid prompt was rejected"
        assert book_state(book) == before
        return
    event(f"{case.fault}: accepted")
    assert case.fault in ("none", "anything"), f"a prompt with fault {case.fault!r} was accepted"
    assert f"object {msg.object_id} " in answer
    assert book.object_ids() == sorted(set(case.known) | {msg.object_id}) and book.queued() == before[1] + 1
    # Whatever was accepted is valid: id, mode, object count, and the prompt itself.
    assert msg.object_id >= 1 and msg.mode in (Prompt.MODE_ADD, Prompt.MODE_REFINE, Prompt.MODE_REPLACE)
    assert msg.mode != Prompt.MODE_REFINE or msg.object_id in case.known
    assert len(book.object_ids()) <= MAX_OBJECTS
    queued = book.drain()[-1]
    assert isinstance(queued, QueuedPrompt) and queued.object_id == msg.object_id
    assert_prepared_prompt_is_valid(queued.prompt)
    if queued.prompt.mask is None:
        points = np.array([(p.x, p.y) for p in msg.points]).reshape(-1, 2)
        assert len(msg.labels) == len(points) and set(msg.labels) <= {0, 1}
        assert np.isfinite(points).all() and (points >= 0).all()
        assert (points[:, 0] <= WIDTH).all() and (points[:, 1] <= HEIGHT).all()


def assert_prepared_prompt_is_valid(prompt) -> None:
    """A prepared prompt: points in the model's S x S input with labels 0..3, or a 0/1 S x S mask."""
    if prompt.mask is not None:
        assert prompt.points is None and tuple(prompt.mask.shape) == (1, IMAGE_SIZE, IMAGE_SIZE)
        assert set(prompt.mask.unique().tolist()) <= {0.0, 1.0}
        return
    points = prompt.points.numpy()
    assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 1 and np.isfinite(points).all()
    assert (points >= 0).all() and (points <= IMAGE_SIZE).all()
    assert set(prompt.labels.tolist()) <= {0, 1, 2, 3} and prompt.labels.shape == (len(points),)


# Faults of Tracker.add_prompt's arguments around a valid content.
ARGUMENT_FAULTS = ("none", "id_value", "id_type", "over_max_objects", "points_shape", "points_without_labels",
                   "mask_dtype", "mask_values")


@dataclass
class ArgumentCase:
    """Tracker.add_prompt arguments for a stream holding `known` ids, and their fault."""

    object_id: Any
    arguments: Dict[str, Any]
    known: List[int]
    fault: str


@st.composite
def add_prompt_cases(draw) -> ArgumentCase:
    """Valid add_prompt arguments (numpy arrays of varied dtypes) with one fault of CONTENT_FAULTS or
    ARGUMENT_FAULTS planted (or none)."""
    content = draw(prompt_contents())
    fault = draw(half_valid(ARGUMENT_FAULTS)) if content.fault == "none" else content.fault
    known = draw(KNOWN_IDS)
    object_id, _ = valid_id_and_mode(draw, known)
    if content.points is not None:
        content.points = content.points.astype(draw(st.sampled_from([np.float64, np.float32])))
    if content.labels is not None and fault != "label_value":
        content.labels = content.labels.astype(draw(st.sampled_from([np.int64, np.int8, np.uint8, np.bool_])))
    if fault == "id_value":
        object_id = draw(st.sampled_from([0, -1, MAX_OBJECT_ID + 1, 2**40]))
    elif fault == "id_type":
        object_id = draw(st.sampled_from([True, 1.0, "1", None]))
    elif fault == "over_max_objects":
        known, object_id = list(range(1, MAX_OBJECTS + 1)), draw(st.integers(MAX_OBJECTS + 1, MAX_OBJECT_ID))
    elif fault == "points_shape":
        shape = draw(st.sampled_from([(2,), (2, 3), (1, 2, 2), (0, 2)]))
        content = PromptContent(fault, points=np.ones(shape), labels=np.ones(shape[0] if shape[0] != 2 else 2, int))
    elif fault == "points_without_labels":
        content = PromptContent(fault, points=np.ones((1, 2))) if draw(st.booleans()) else PromptContent(
            fault, labels=np.ones(1, int), box=np.array([0.0, 0.0, 5.0, 5.0]))
    elif fault in ("mask_dtype", "mask_values"):
        mask = np.zeros(FRAME, np.uint8)
        mask[0, 0] = 1
        content = PromptContent(fault, mask=(mask.astype(draw(st.sampled_from([np.float32, np.complex64])))
                                             if fault == "mask_dtype" else mask * 2))
    arguments = dict(points=content.points, labels=content.labels, box=content.box, mask=content.mask)
    return ArgumentCase(object_id, arguments, known, fault)


# numpy >= 1.25 has it in np.exceptions (numpy 2 only there), older numpy at the top level.
COMPLEX_WARNING = getattr(np, "exceptions", np).ComplexWarning
# Any arrays, as a Python caller may pass them.
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 40.0), st.integers(-5, 50))
ANY_DTYPE = st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.uint8, np.bool_, np.complex64])


def arrays_of(shapes, elements=NUMBERS):
    """Arrays of `shapes` holding `elements`, cast to any dtype (NaN or out-of-range values cast as numpy does)."""
    return st.tuples(ANY_DTYPE, hnp.arrays(np.float64, shapes, elements=elements)).map(lambda drawn: _cast(*drawn))


def _cast(dtype: Any, values: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return values.astype(dtype)


@st.composite
def any_add_prompt_cases(draw) -> ArgumentCase:
    """add_prompt arguments of any dtype and shape (or None) and ids of any type."""
    object_id = draw(st.one_of(st.integers(-3, MAX_OBJECTS + 3), st.integers(MAX_OBJECT_ID - 1, MAX_OBJECT_ID + 2),
                               st.booleans(), st.floats(0, 5), st.just(np.int64(2)), st.just("1")))
    point_shapes = st.one_of(st.tuples(st.integers(0, 4), st.just(2)), hnp.array_shapes(min_dims=0, max_dims=3,
                                                                                       max_side=4))
    label_values = st.one_of(st.integers(0, 1), st.integers(-3, 300), st.floats(allow_nan=True))
    mask_shapes = st.one_of(st.just(FRAME), st.just((HEIGHT, WIDTH + 1)), hnp.array_shapes(max_dims=3, max_side=4))
    arguments = dict(
        points=draw(st.none() | arrays_of(point_shapes)),
        labels=draw(st.none() | arrays_of(hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), label_values)),
        box=draw(st.none() | arrays_of(st.sampled_from([(4,), (4,), (2, 2), (5,), (0,)]))),
        mask=draw(st.none() | arrays_of(mask_shapes, st.integers(0, 2))),
    )
    return ArgumentCase(object_id, arguments, draw(KNOWN_IDS), "anything")


def stream_state(stream) -> Tuple[Any, ...]:
    """What a rejected prompt must leave as it was: ids, frame index and size, and the bytes the stream holds."""
    return stream.object_ids, stream.frame_index, stream.frame_size, stream.state_nbytes()


@fuzz(600)
@given(case=st.one_of(add_prompt_cases(), add_prompt_cases(), any_add_prompt_cases()))
def test_fuzzed_tracker_prompts_are_queued_or_rejected_with_the_stream_unchanged(tracker, case) -> None:
    stream = tracker.create_stream()
    for known_id in case.known:
        tracker.add_prompt(stream, known_id, points=[[1.0, 1.0]], labels=[1], frame_size=FRAME)
    before = stream_state(stream)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", COMPLEX_WARNING)  # complex coordinates lose their imaginary part
            tracker.add_prompt(stream, case.object_id, frame_size=FRAME, **case.arguments)
    except TrackerInputError:
        event(f"{case.fault}: rejected")
        assert case.fault != "none", "a valid prompt was rejected"
        assert stream_state(stream) == before
        return
    event(f"{case.fault}: accepted")
    assert case.fault in ("none", "anything"), f"a prompt with fault {case.fault!r} was accepted"
    object_id = case.object_id
    assert not isinstance(object_id, (bool, str, float)) and 1 <= int(object_id) <= MAX_OBJECT_ID
    assert int(object_id) in stream.object_ids and len(stream.object_ids) <= MAX_OBJECTS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", COMPLEX_WARNING)
        assert_prepared_prompt_is_valid(tracker.prepare_prompt(FRAME, **case.arguments))

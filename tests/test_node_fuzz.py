"""The live node under fuzzed inputs (issue 10): a fuzzing publisher sends a few hundred malformed Image,
CompressedImage and Prompt messages and service calls, interleaved with good frames.

The node (own process, real DDS, tiny model at image_size 64, random weights) must stay active, keep its objects
(every good frame comes back with objects 1 and 2 and a label image of its size), count every rejection under its
kind, and log each kind at most once per ERROR_LOG_PERIOD_S. The inputs come from a seeded generator: every one of
them is malformed (images are checked against the pure conversion functions before they are sent), so the
counters must rise by exactly the number sent. tests/test_fuzz.py fuzzes the same functions without ROS.
"""
from __future__ import annotations

import math
import random
import time
from collections import Counter
from typing import Any, Iterator, List, Tuple

import numpy as np
import pytest

from conftest import FASTDDS_PROFILE, Processes, open_rclpy_context

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from lifecycle_msgs.msg import Transition  # noqa: E402
from testkit.ros_client import (  # noqa: E402
    HEIGHT,
    WIDTH,
    Client,
    OutputReader,
    RunningNode,
    camera_clip,
    ids,
    make_prompt,
    node_command,
    node_env,
    stamp_of,
    wait_until,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sam2_ros.camera_round import ERROR_LOG_PERIOD_S  # noqa: E402
from sam2_ros.conversions import (  # noqa: E402
    ImageConversionError,
    compressed_to_rgb,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    rgb_to_compressed,
)
from sam2_ros.msg import Prompt  # noqa: E402
from sam2_ros.srv import AddPrompt, RemoveObjects, Reset  # noqa: E402

NAMESPACE = "/fuzz"
PARAMETERS = ("image_size:=64", "device:=cpu", "allow_random_weights:=true", "max_objects:=8",
              "diagnostics_period:=0.1")
FRAMES = iter(range(300_000, 1_000_000))
SEED = 10
# A good frame after every this many malformed inputs.
GOOD_FRAME_EVERY = 10
# Prompts published before waiting for their rejections (well under the node's prompt subscription depth).
PROMPT_BATCH = 8
FLOAT32_MAX = float(np.finfo(np.float32).max)
UINT32 = 2**32 - 1


# --------------------------------------------------------------------------- the fuzzing generator


class Fuzzer:
    """Malformed messages and requests from a seeded generator (each method says what it breaks)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.kinds: Counter = Counter()  # how many of each mutation were made

    def image(self, good: Image) -> Image:
        """A copy of `good` with one field broken (or every size field random); never decodable."""
        while True:
            kind = self.rng.choice(["encoding", "zero_size", "short_step", "short_data", "huge_size", "random"])
            msg = Image(header=good.header, height=good.height, width=good.width, encoding=good.encoding,
                        is_bigendian=good.is_bigendian, step=good.step)
            data = bytes(good.data)
            if kind == "encoding":
                msg.encoding = self.rng.choice(["yuv422", "", "32FC1", "RGB8", "bayer_rggb8", "rgb16", "\u00e9"])
            elif kind == "zero_size":
                setattr(msg, self.rng.choice(["height", "width"]), 0)
            elif kind == "short_step":
                msg.step = self.rng.randrange(0, good.step)
            elif kind == "short_data":
                data = data[: self.rng.randrange(0, len(data))]
            elif kind == "huge_size":
                setattr(msg, self.rng.choice(["height", "width"]), self.rng.choice([2**16, 2**31 - 1, UINT32]))
            else:
                msg.height, msg.width, msg.step = (self.rng.randrange(0, UINT32) for _ in range(3))
                data = self.rng.randbytes(self.rng.randrange(0, 512))
            msg.data = data
            if not decodable(image_to_rgb, msg):
                self.kinds[f"image:{kind}"] += 1
                return msg

    def compressed(self, good: CompressedImage) -> CompressedImage:
        """Empty, random, truncated or corrupted jpeg/png bytes that OpenCV cannot decode."""
        while True:
            kind = self.rng.choice(["empty", "random", "truncated", "corrupted"])
            data = bytes(good.data)
            if kind == "empty":
                data = b""
            elif kind == "random":
                data = self.rng.choice([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]) + self.rng.randbytes(
                    self.rng.randrange(0, 2048))
            elif kind == "truncated":
                data = data[: self.rng.randrange(0, len(data) // 8)]
            else:
                corrupted = bytearray(data[:64])
                for _ in range(self.rng.randrange(1, 16)):
                    corrupted[self.rng.randrange(0, len(corrupted))] = self.rng.randrange(0, 256)
                data = bytes(corrupted)
            msg = CompressedImage(header=good.header, format=good.format)
            msg.data = data
            if not decodable(compressed_to_rgb, msg):
                self.kinds[f"compressed:{kind}"] += 1
                return msg

    def prompt(self) -> Prompt:
        """A prompt for a 640x480 frame tracking objects 1 and 2, with one fault."""
        rng = self.rng
        kind = rng.choice(["nan", "infinity", "float32_max", "outside", "label_value", "label_count", "id_zero",
                           "mode", "refine_unknown", "empty", "box_inverted", "box_nan", "mask_size",
                           "mask_channels", "mask_with_points"])
        msg = make_prompt(rng.choice([1, 2]), points=[(rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT))], labels=[1])
        point = msg.points[0]
        if kind in ("nan", "infinity", "float32_max", "outside"):
            value = {"nan": math.nan, "infinity": rng.choice([math.inf, -math.inf]),
                     "float32_max": rng.choice([FLOAT32_MAX, -FLOAT32_MAX]),
                     "outside": rng.choice([-rng.uniform(0.01, 1e6), WIDTH + rng.uniform(0.01, 1e6)])}[kind]
            setattr(point, rng.choice(["x", "y"]) if kind != "outside" else "x", value)
        elif kind == "label_value":
            msg.labels = [rng.choice([-128, -1, 2, 3, 127])]
        elif kind == "label_count":
            msg.labels = [1, 0] if rng.random() < 0.5 else []
        elif kind == "id_zero":
            msg.object_id = 0
        elif kind == "mode":
            msg.mode = rng.randrange(3, 256)
        elif kind == "refine_unknown":
            msg.object_id, msg.mode = rng.randrange(3, 2**16), Prompt.MODE_REFINE
        elif kind == "empty":
            msg.points, msg.labels = [], []
        elif kind in ("box_inverted", "box_nan"):
            msg.points, msg.labels, msg.has_box = [], [], True
            msg.box = [300.0, 100.0, 200.0, 260.0] if kind == "box_inverted" else [300.0, math.nan, 420.0, 260.0]
        else:
            size = (HEIGHT + 1, WIDTH) if kind == "mask_size" else (HEIGHT, WIDTH)
            pixels = np.zeros(size + ((3,) if kind == "mask_channels" else ()), np.uint8)
            msg.mask = numpy_to_image(pixels, "rgb8" if kind == "mask_channels" else "mono8")
            if kind != "mask_with_points":
                msg.points, msg.labels = [], []
        self.kinds[f"prompt:{kind}"] += 1
        return msg

    def request(self) -> Tuple[str, Any, str]:
        """(Client attribute of the service, request, the counter its refusal counts under)."""
        kind = self.rng.choice(["add_prompt", "remove_unknown", "unknown_camera_add", "unknown_camera_remove",
                                "unknown_camera_reset"])
        self.kinds[f"service:{kind}"] += 1
        camera = self.rng.choice(["rear", "left_camera", " ", "a/b"])
        if kind == "add_prompt":
            return "add_prompt", AddPrompt.Request(prompt=self.prompt()), "prompts_rejected"
        if kind == "remove_unknown":
            unknown = [self.rng.randrange(3, 2**16) for _ in range(self.rng.randrange(1, 4))]
            return "remove", RemoveObjects.Request(object_ids=unknown + self.rng.choice([[], [1]])), \
                "requests_rejected"
        if kind == "unknown_camera_add":
            return "add_prompt", AddPrompt.Request(camera=camera, prompt=make_prompt(1, points=[(5, 5)], labels=[1])), \
                "requests_rejected"
        if kind == "unknown_camera_remove":
            return "remove", RemoveObjects.Request(camera=camera, object_ids=[1]), "requests_rejected"
        return "reset_client", Reset.Request(camera=camera), "requests_rejected"


def decodable(decode, msg) -> bool:
    try:
        decode(msg)
    except ImageConversionError:
        return False
    return True


# --------------------------------------------------------------------------- the node


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory) -> Iterator[RunningNode]:
    processes = Processes()
    with open_rclpy_context(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE)) as context:
        client = None
        try:
            proc = processes.start(*node_command(*PARAMETERS, namespace=NAMESPACE), env=node_env(tmp_path_factory))
            output = OutputReader(proc)
            assert output.wait_for("activated:", timeout=120.0), output.text()
            client = Client(context, namespace=NAMESPACE)
            yield RunningNode(proc, output, client)
        finally:
            if client is not None:
                client.close()
            processes.close()


def latest(client: Client, name: str) -> int:
    """The node's counter `name` in the latest /diagnostics received (-1 before any)."""
    return int(client.diagnostics[-1][1][name]) if client.diagnostics else -1


def expect_counter(client: Client, name: str, value: int, resend=None) -> None:
    """Wait until the node's counter `name` reaches `value`; `resend()` publishes the input again after a while
    (a best-effort image lost by DDS is neither received nor counted)."""
    while not wait_until(lambda: latest(client, name) >= value, timeout=5.0):
        assert resend is not None, f"{name} stays at {latest(client, name)}, expected {value}"
        resend()
    assert latest(client, name) == value, (name, latest(client, name), value)


def start_tracking(client: Client, compressed: bool) -> None:
    """Objects 1 and 2 on the next frame (a first frame tells the node the image size)."""
    good_frame(client, compressed)
    assert client.prompt(1, points=[(200, 200)], labels=[1]).success
    assert client.prompt(2, box=(300, 100, 420, 260)).success


def good_frame(client: Client, compressed: bool) -> Tuple[List[int], Tuple[int, ...]]:
    """Step a good frame (jpeg when `compressed`): the ids of its objects and the shape of its label image."""
    index = next(FRAMES)
    header = Header(stamp=stamp_of(index), frame_id="test_camera")
    frame = camera_clip().frame(index)
    msg = rgb_to_compressed(frame, "jpeg", header) if compressed else numpy_to_image(frame, "rgb8", header)
    objects = client.step_message(msg)
    assert wait_until(lambda: index in client.masks, timeout=10.0)
    return ids(objects), image_to_numpy(client.masks[index]).shape


def check_good_frame(client: Client, compressed: bool) -> None:
    """A good frame still comes back with objects 1 and 2 and its label image."""
    assert good_frame(client, compressed) == ([1, 2], (HEIGHT, WIDTH))


def transition(client: Client, transition_id: int) -> None:
    assert client.transition(transition_id)


def send_requests(client: Client, fuzzer: Fuzzer, count: int, sent: Counter) -> None:
    """`count` malformed service calls; each is answered with a refusal and its reason."""
    for _ in range(count):
        service, request, counter = fuzzer.request()
        answer = client.call(getattr(client, service), request)
        assert not answer.success and answer.message, (request, answer)
        sent[counter] += 1


def send_prompts(client: Client, fuzzer: Fuzzer, count: int, sent: Counter) -> None:
    """`count` malformed prompts on the topic, in batches the node's subscription holds."""
    for first in range(0, count, PROMPT_BATCH):
        batch = min(PROMPT_BATCH, count - first)
        for _ in range(batch):
            client.prompts.publish(fuzzer.prompt())
        sent["prompts_rejected"] += batch
        expect_counter(client, "prompts_rejected", sent["prompts_rejected"])


def send_images(client: Client, fuzzer: Fuzzer, count: int, sent: Counter, compressed: bool) -> None:
    """`count` malformed images, one at a time (the node keeps only the newest waiting frame), with a good frame
    after every GOOD_FRAME_EVERY."""
    index = next(FRAMES)
    header = Header(stamp=stamp_of(index), frame_id="test_camera")
    good_image = numpy_to_image(camera_clip().frame(index), "rgb8", header)
    good_compressed = rgb_to_compressed(camera_clip().frame(index), "png", header)
    camera = client.compressed_camera if compressed else client.camera
    for k in range(count):
        bad = fuzzer.compressed(good_compressed) if compressed else fuzzer.image(good_image)
        camera.publish(bad)
        sent["images_rejected"] += 1
        expect_counter(client, "images_rejected", sent["images_rejected"], resend=lambda: camera.publish(bad))
        if (k + 1) % GOOD_FRAME_EVERY == 0:
            check_good_frame(client, compressed)


def test_fuzzed_messages_and_calls_are_counted_and_logged_by_kind_and_the_node_keeps_its_objects(fuzz_node) -> None:
    client, output = fuzz_node.client, fuzz_node.output
    fuzzer = Fuzzer(SEED)
    started = time.monotonic()
    start_tracking(client, compressed=False)
    before = client.counters()
    assert before["images_rejected"] == before["prompts_rejected"] == before["requests_rejected"] == 0, before

    # Raw images, prompts on the topic and service calls, each followed by good frames.
    sent: Counter = Counter()
    for _ in range(4):
        send_images(client, fuzzer, 20, sent, compressed=False)
        send_prompts(client, fuzzer, 25, sent)
        send_requests(client, fuzzer, 15, sent)
        check_good_frame(client, compressed=False)
    after = client.counters()
    assert {name: after[name] for name in sent} == dict(sent), (after, sent)
    assert after["worker_errors"] == 0 and after["frames_processed"] >= 4 * 20 // GOOD_FRAME_EVERY + 4

    # Compressed images: the same node, re-activated to subscribe to image/compressed (activation resets the
    # counters and forgets the objects).
    assert client.set("use_compressed", True).successful
    transition(client, Transition.TRANSITION_DEACTIVATE)
    transition(client, Transition.TRANSITION_ACTIVATE)
    start_tracking(client, compressed=True)
    assert client.counters()["images_rejected"] == 0  # the counters of this activation
    compressed_sent: Counter = Counter()
    for _ in range(2):
        send_images(client, fuzzer, 20, compressed_sent, compressed=True)
        send_prompts(client, fuzzer, 10, compressed_sent)
    check_good_frame(client, compressed=True)
    after = client.counters()
    assert {name: after[name] for name in compressed_sent} == dict(compressed_sent), (after, compressed_sent)
    assert after["worker_errors"] == 0 and client.lifecycle_state() == "active"
    assert fuzz_node.proc.poll() is None

    # Every kind was logged, at most once per ERROR_LOG_PERIOD_S.
    elapsed = time.monotonic() - started
    for name in ("images_rejected", "prompts_rejected", "requests_rejected"):
        lines = output.count(f"[{name}: ")
        assert 1 <= lines <= 1 + elapsed / ERROR_LOG_PERIOD_S, (name, lines, elapsed)
    total = sum(sent.values()) + sum(compressed_sent.values())
    assert total == 4 * (20 + 25 + 15) + 2 * (20 + 10) and len(fuzzer.kinds) >= 25, fuzzer.kinds

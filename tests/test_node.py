"""The tracker node over real DDS: the node runs in its own process (the `sam2-ros-tracker` console script),
the test is the camera, the prompt source and the consumer.

Tiny model at image_size 128 with random weights: the masks mean nothing, the plumbing is what is tested.
One node serves the module (its start-up costs ~15 s here); every test starts from a reset.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from conftest import FASTDDS_PROFILE, Processes, open_rclpy_context

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from lifecycle_msgs.msg import Transition  # noqa: E402
from rcl_interfaces.srv import DescribeParameters  # noqa: E402
from testkit.ros_client import (  # noqa: E402
    HEIGHT,
    NODE_PARAMETERS,
    STEP_TIMEOUT,
    WIDTH,
    Client,
    OutputReader,
    RunningNode,
    assert_latest_frame_kept,
    camera_clip,
    ids,
    increase,
    index_of,
    make_prompt,
    node_command,
    node_env,
    publish_burst,
    stamp_of,
    wait_until,
)
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sam2_ros.conversions import image_to_numpy, rgb_to_compressed  # noqa: E402
from sam2_ros.msg import Prompt  # noqa: E402
from sam2_ros.srv import AddPrompt, RemoveObjects, Reset  # noqa: E402
from sam2_ros.worker import resolve_cpu_threads  # noqa: E402
from sam2_rt.modeling.config import MODEL_NAMES  # noqa: E402


@pytest.fixture(scope="module")
def ros_context():
    """An rclpy context whose participant uses the shipped Fast DDS profile, like the node's."""
    with open_rclpy_context(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE)) as context:
        yield context


@pytest.fixture(scope="module")
def tracker_node(ros_context, tmp_path_factory):
    """The node (own process) with random weights, active, and a client; every test starts it from a reset."""
    processes = Processes()
    client = None
    try:
        proc = processes.start(*node_command(*NODE_PARAMETERS), env=node_env(tmp_path_factory))
        output = OutputReader(proc)
        assert output.wait_for("activated:", timeout=120.0), f"node did not activate:\n{output.text()}"
        # cpu_threads:=0 (default) leaves one core to DDS and the camera
        assert f"on cpu (torch threads: {resolve_cpu_threads(0)})" in output.text(), output.text()
        client = Client(ros_context)
        client.step(0)  # the first frame: discovery done both ways, the node knows the image size
        yield RunningNode(proc, output, client)
    finally:
        if client is not None:
            client.close()
        processes.close()


@pytest.fixture
def node(tracker_node: RunningNode) -> RunningNode:
    tracker_node.client.reset()
    yield tracker_node
    assert tracker_node.proc.poll() is None, f"the node died:\n{tracker_node.output.text()}"


FRAMES = iter(range(1, 1_000_000))  # frame indices (stamps) are unique across the module's tests


def test_every_processed_frame_gives_a_label_image_and_objects_with_the_input_header(node: RunningNode) -> None:
    client = node.client
    assert client.prompt(1, points=[(200, 200)], labels=[1]).success
    answer = client.prompt(2, box=(300, 100, 420, 260))
    assert answer.success and answer.object_id == 2, answer.message
    frames = [next(FRAMES) for _ in range(4)]
    for index in frames:
        published = time.monotonic()
        objects = client.step(index)
        received = time.monotonic()
        assert ids(objects) == [1, 2]
        assert objects.header.stamp == stamp_of(index) and objects.header.frame_id == "test_camera"
        # From the frame's arrival at the node to publication: within publish -> receive here (one monotonic clock).
        assert 0 < objects.latency.sec + objects.latency.nanosec * 1e-9 <= received - published
        assert wait_until(lambda: index in client.masks and index in client.overlays, timeout=10.0)
        mask, overlay = client.masks[index], client.overlays[index]
        assert mask.header == objects.header and overlay.header == objects.header
        assert (mask.encoding, mask.width, mask.height) == ("mono16", WIDTH, HEIGHT)
        assert set(np.unique(image_to_numpy(mask))) <= {0, 1, 2}
        assert (overlay.encoding, overlay.width, overlay.height) == ("bgr8", WIDTH, HEIGHT)
        labels = image_to_numpy(mask)
        for obj in objects.objects:
            # The label image gives overlapping pixels to one object; mask_area counts the whole mask.
            assert obj.mask_area >= int((labels == obj.object_id).sum())
            assert obj.state in (obj.STATE_TRACKING, obj.STATE_OCCLUDED, obj.STATE_LOST)
    # Lock-step: nothing was dropped, and each frame was processed exactly once.
    diagnostics = client.diagnostics_after(time.monotonic())
    assert int(diagnostics["frames_processed"]) >= len(frames) + 1
    assert all(client.objects[i].dropped_frames == 0 for i in frames)


def test_published_ids_follow_add_refine_replace_remove_and_reset(node: RunningNode) -> None:
    client = node.client
    assert client.prompt(1, points=[(200, 200)], labels=[1]).success
    assert client.prompt(2, points=[(350, 180), (360, 300)], labels=[1, 0]).success
    assert ids(client.step(next(FRAMES))) == [1, 2]
    assert ids(client.step(next(FRAMES))) == [1, 2]

    answer = client.prompt(3, box=(100, 100, 200, 220))  # a third object mid-stream
    assert answer.success and "added" in answer.message
    assert ids(client.step(next(FRAMES))) == [1, 2, 3]

    answer = client.prompt(1, Prompt.MODE_REFINE, points=[(210, 205)], labels=[0])
    assert answer.success and "refined" in answer.message
    assert ids(client.step(next(FRAMES))) == [1, 2, 3]

    answer = client.prompt(3, Prompt.MODE_REPLACE, points=[(150, 150)], labels=[1])
    assert answer.success and "replaced" in answer.message
    assert ids(client.step(next(FRAMES))) == [1, 2, 3]

    client.prompts.publish(make_prompt(4, points=[(500, 400)], labels=[1]))  # prompts topic too
    assert wait_until(lambda: node.output.count("object 4 added") == 1, timeout=30.0)
    assert ids(client.step(next(FRAMES))) == [1, 2, 3, 4]

    removed = client.call(client.remove, RemoveObjects.Request(object_ids=[2]))
    assert removed.success and list(removed.remaining_ids) == [1, 3, 4]
    assert ids(client.step(next(FRAMES))) == [1, 3, 4]

    client.reset()
    assert ids(client.step(next(FRAMES))) == []


def test_refining_an_unknown_object_is_rejected_and_changes_nothing(node: RunningNode) -> None:
    client = node.client
    assert client.prompt(1, points=[(200, 200)], labels=[1]).success
    answer = client.prompt(5, Prompt.MODE_REFINE, points=[(10, 10)], labels=[1])
    assert not answer.success and "not tracked" in answer.message
    assert ids(client.step(next(FRAMES))) == [1]


def test_a_camera_faster_than_the_model_gets_the_latest_frame_with_no_backlog_and_bounded_memory(
    node: RunningNode,
) -> None:
    client = node.client
    assert client.prompt(1, points=[(200, 200)], labels=[1]).success
    assert client.prompt(2, box=(300, 100, 420, 260)).success
    client.step(next(FRAMES))
    publish_burst(client, FRAMES, count=120, rate_hz=30.0)  # warm-up: allocator pools, DDS buffers
    before, rss_warm = client.counters(), node.rss_bytes()
    bursts = [publish_burst(client, FRAMES, count=120, rate_hz=30.0) for _ in range(2)]
    change, rss_after = increase(before, client.counters()), node.rss_bytes()

    for burst in bursts:
        processed = assert_latest_frame_kept(client, burst)
        assert all(ids(client.objects[index]) == [1, 2] for index in processed)
    # Every frame the node received was processed or dropped, and each objects message reports the drops so far.
    # How many were dropped depends on how fast the model is against the camera (a GPU may keep up): not asserted.
    assert change["frames_received"] == change["frames_processed"] + change["frames_dropped"], change
    assert change["frames_received"] <= sum(len(burst.sent) for burst in bursts), change
    assert client.objects[bursts[-1].sent[-1]].dropped_frames == before["frames_dropped"] + change["frames_dropped"]
    # A leak of one 640x480 frame per received frame would add ~220 MB over these 240 frames.
    assert rss_after - rss_warm < 40e6, f"RSS grew by {(rss_after - rss_warm) / 1e6:.1f} MB"


def test_bad_inputs_are_logged_counted_and_change_nothing(node: RunningNode) -> None:
    client, output = node.client, node.output
    assert client.prompt(1, points=[(200, 200)], labels=[1]).success
    assert client.prompt(2, box=(300, 100, 420, 260)).success
    assert ids(client.step(next(FRAMES))) == [1, 2]
    before = client.diagnostics_after(time.monotonic())

    unknown_encoding = client.image(next(FRAMES))
    unknown_encoding.encoding = "yuv422"
    short_data = client.image(next(FRAMES))
    short_data.data = bytes(short_data.data)[: short_data.step * short_data.height // 2]
    zero_size = Image(header=Header(stamp=stamp_of(next(FRAMES))), encoding="rgb8")
    for bad in (unknown_encoding, short_data, zero_size):
        client.camera.publish(bad)
        # One at a time: the node takes only the newest waiting frame.
        count = int(before["images_rejected"]) + 1 + (bad is not unknown_encoding) + (bad is zero_size)
        assert wait_until(lambda: client.counter("images_rejected") == count, timeout=30.0), output.text()
    # Each kind is logged once per window (with its reason), every one is counted.
    assert output.count("image rejected: unsupported image encoding 'yuv422'") == 1, output.text()
    assert output.count("image rejected") == 1, output.text()

    prompt_cases = (
        (make_prompt(1, points=[(math.nan, 10.0)], labels=[1]), "must be finite numbers"),
        (make_prompt(2, points=[(WIDTH + 5.0, 10.0)], labels=[1]), f"outside the {WIDTH}x{HEIGHT} frame"),
        (make_prompt(1, points=[(10.0, 10.0)], labels=[2]), "labels must be 0 (background) or 1 (object)"),
        (make_prompt(2), "a prompt needs points"),
    )
    for bad, _ in prompt_cases:
        client.prompts.publish(bad)
    assert wait_until(lambda: output.count(prompt_cases[0][1]) == 1, timeout=30.0), output.text()
    for bad, reason in prompt_cases:  # the service answers each with its reason
        answer = client.call(client.add_prompt, AddPrompt.Request(prompt=bad))
        assert not answer.success and reason in answer.message, (reason, answer.message)
    answer = client.call(client.add_prompt, AddPrompt.Request(prompt=make_prompt(1, points=[(1.0, 1.0)], labels=[])))
    assert not answer.success and "points and labels must be given together" in answer.message

    removed = client.call(client.remove, RemoveObjects.Request(object_ids=[2, 77]))
    assert not removed.success and "77" in removed.message and list(removed.remaining_ids) == [1, 2]
    assert output.count("remove_objects [2, 77] rejected") == 1
    elsewhere = client.call(client.reset_client, Reset.Request(camera="rear"))
    assert not elsewhere.success and "unknown camera 'rear'" in elsewhere.message

    small = client.step(next(FRAMES), width=320, height=240)  # resolution change mid-stream
    assert ids(small) == [1, 2]
    small_index = index_of(small.header.stamp)
    assert wait_until(lambda: small_index in client.masks, timeout=10.0)
    assert (client.masks[small_index].width, client.masks[small_index].height) == (320, 240)
    assert output.count("input resolution changed from 640x480 to 320x240") == 1
    assert ids(client.step(next(FRAMES))) == [1, 2]  # and back

    after = client.diagnostics_after(time.monotonic())
    increase = {name: int(after[name]) - int(before[name]) for name in
                ("images_rejected", "prompts_rejected", "requests_rejected", "resolution_changes", "worker_errors")}
    assert increase == dict(images_rejected=3, prompts_rejected=9, requests_rejected=2, resolution_changes=2,
                            worker_errors=0), increase
    assert node.proc.poll() is None


def test_an_invalid_parameter_value_is_rejected_with_a_reason(node: RunningNode) -> None:
    client = node.client
    for name, value, reason in (
        ("device", "tpu", "'tpu' is not one of auto, cuda, cpu"),
        ("precision", "fp8", "is not one of auto, fp32, bf16, fp16"),
        ("model", "sam3_huge", "is not one of sam2_hiera_tiny"),
        ("checkpoint", "/nonexistent/sam2.pt", "checkpoint file not found"),
        ("image_size", 100, "image_size"),
        ("overlay_alpha", 1.5, "overlay_alpha"),
    ):
        result = client.set(name, value)
        assert not result.successful and reason in result.reason, (name, result.reason)
    described = client.call(client.describe_parameters, DescribeParameters.Request(names=["model", "image_size"]))
    model, image_size = described.descriptors
    assert all(name in model.additional_constraints for name in MODEL_NAMES) and model.description
    assert (image_size.integer_range[0].from_value, image_size.integer_range[0].step) == (64, 32)


def test_turning_the_overlay_off_at_runtime_stops_it_while_masks_continue(node: RunningNode) -> None:
    client = node.client
    assert client.prompt(1, points=[(200, 200)], labels=[1]).success
    assert client.set("publish_overlay", False).successful
    without = [next(FRAMES) for _ in range(2)]
    for index in without:
        client.step(index)
    assert wait_until(lambda: all(i in client.masks for i in without), timeout=10.0)
    assert client.set("publish_overlay", True).successful
    with_overlay = next(FRAMES)
    client.step(with_overlay)
    assert wait_until(lambda: with_overlay in client.overlays, timeout=10.0)
    assert not any(i in client.overlays for i in without)


def test_without_checkpoint_the_node_refuses_to_activate_until_random_weights_are_allowed(
    ros_context, tmp_path_factory
) -> None:
    """Also: lifecycle transitions over the standard services, the compressed image input, SIGTERM."""
    processes = Processes()
    client = None
    try:
        parameters = ("image_size:=128", "device:=cpu", "use_compressed:=true", "diagnostics_period:=0.5")
        proc = processes.start(*node_command(*parameters, namespace="/refusing"), env=node_env(tmp_path_factory))
        output = OutputReader(proc)
        assert output.wait_for("refusing to activate: no checkpoint for sam2.1_hiera_tiny", timeout=120.0), output.text()
        client = Client(ros_context, namespace="/refusing")
        assert client.lifecycle_state() == "inactive"
        assert wait_until(lambda: any("refusing to activate" in d[3] for d in client.diagnostics), timeout=30.0)
        answer = client.prompt(1, points=[(10, 10)], labels=[1])
        assert not answer.success and "not active" in answer.message

        assert client.set("allow_random_weights", True).successful
        assert client.transition(Transition.TRANSITION_ACTIVATE)
        assert client.lifecycle_state() == "active"
        assert output.wait_for("RANDOM WEIGHTS", timeout=10.0)

        frame = rgb_to_compressed(camera_clip(320, 240).frame(0), "jpeg", Header(stamp=stamp_of(0), frame_id="jpeg"))
        deadline = time.monotonic() + STEP_TIMEOUT
        while 0 not in client.objects and time.monotonic() < deadline:
            client.compressed_camera.publish(frame)
            wait_until(lambda: 0 in client.objects, timeout=5.0)
        assert 0 in client.objects and client.objects[0].header.frame_id == "jpeg"
        assert wait_until(lambda: 0 in client.masks, timeout=10.0) and client.masks[0].width == 320

        assert client.transition(Transition.TRANSITION_DEACTIVATE)
        assert client.lifecycle_state() == "inactive"

        proc.terminate()  # SIGTERM ends the node cleanly
        assert proc.wait(timeout=30.0) == 0, output.text()
        assert output.count("Traceback") == 0, output.text()
    finally:
        if client is not None:
            client.close()
        processes.close()

"""Several cameras, one model: one node process serves two cameras over real DDS.

Each camera has its own topics (<name>/image, <name>/masks, ...), its own object ids and its own requests;
every output carries its own camera's header and size. When the model is slower than the cameras, every
camera still gets its share of processed frames (counted, not timed). The DDS tests run twice: with the default
worker (every camera in one batched step per round) and with two worker threads (`worker_threads:=2`).
"""
from __future__ import annotations

import threading
import time

import pytest

from conftest import FASTDDS_PROFILE, Processes, open_rclpy_context

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from testkit.ros_client import (  # noqa: E402
    STEP_TIMEOUT,
    Client,
    OutputReader,
    ids,
    index_of,
    make_prompt,
    node_command,
    node_env,
    wait_until,
)

from sam2_ros.msg import TrackedObjectArray  # noqa: E402
from sam2_ros.srv import AddPrompt, RemoveObjects, Reset  # noqa: E402

FRAMES = iter(range(20_000, 1_000_000))
SIZES = {"front": (640, 480), "rear": (320, 240)}


# The default worker (every camera in one batched step per round) and two worker threads (one camera each).
@pytest.fixture(scope="module", params=[1, 2], ids=["1 worker", "2 worker threads"])
def cameras(request, tmp_path_factory):
    processes = Processes()
    clients = {}
    with open_rclpy_context(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE)) as context:
        try:
            parameters = ("image_size:=128", "device:=cpu", "allow_random_weights:=true", "cameras:=[front, rear]",
                          "diagnostics_period:=0.5", f"worker_threads:={request.param}")
            proc = processes.start(*node_command(*parameters, namespace="/multi"), env=node_env(tmp_path_factory))
            output = OutputReader(proc)
            assert output.wait_for("activated:", timeout=120.0), output.text()
            assert "listening on /multi/front/image, /multi/rear/image" in output.text()
            assert ("2 worker threads" in output.text()) == (request.param == 2), output.text()
            clients = {name: Client(context, namespace="/multi", camera=name, frame_id=f"{name}_optical")
                       for name in SIZES}
            for name, client in clients.items():
                client.step(next(FRAMES), *SIZES[name])
            yield clients, output, request.param
        finally:
            for client in clients.values():
                client.close()
            processes.close()


def step(client: Client) -> TrackedObjectArray:
    return client.step(next(FRAMES), *SIZES[client.camera_name])


def test_each_camera_has_its_own_objects_headers_and_sizes(cameras) -> None:
    clients, _, _ = cameras
    front, rear = clients["front"], clients["rear"]
    front.reset()
    rear.reset()
    assert front.prompt(1, points=[(200, 200)], labels=[1]).success
    assert rear.prompt(1, box=(10, 10, 100, 120)).success
    assert rear.prompt(2, points=[(50, 60)], labels=[1]).success
    for _ in range(2):
        for client in (front, rear):
            objects = step(client)
            index = index_of(objects.header.stamp)
            assert objects.header.frame_id == f"{client.camera_name}_optical"
            assert wait_until(lambda: index in client.masks, timeout=10.0)
            assert (client.masks[index].width, client.masks[index].height) == SIZES[client.camera_name]
            assert client.masks[index].header == objects.header
    assert ids(step(front)) == [1] and ids(step(rear)) == [1, 2]

    # Removing object 1 of the rear camera leaves the front camera's object 1 alone.
    removed = rear.call(rear.remove, RemoveObjects.Request(camera="rear", object_ids=[1]))
    assert removed.success and list(removed.remaining_ids) == [2]
    assert ids(step(rear)) == [2] and ids(step(front)) == [1]
    # A prompt on one camera's topic reaches only that camera.
    rear.prompts.publish(make_prompt(5, points=[(20, 20)], labels=[1]))
    assert wait_until(lambda: ids(step(rear)) == [2, 5], timeout=STEP_TIMEOUT)
    assert ids(step(front)) == [1]


def test_requests_name_a_camera_and_a_wrong_or_missing_name_is_a_clear_error(cameras) -> None:
    clients, _, _ = cameras
    front = clients["front"]
    for request, client in ((AddPrompt.Request(camera="side"), front.add_prompt),
                            (RemoveObjects.Request(camera="side", object_ids=[1]), front.remove),
                            (Reset.Request(camera="side"), front.reset_client)):
        answer = front.call(client, request)
        assert not answer.success and "unknown camera 'side'; cameras: 'front', 'rear'" in answer.message
    answer = front.call(front.reset_client, Reset.Request())
    assert not answer.success and "several cameras: name one of 'front', 'rear'" in answer.message


def test_per_camera_diagnostics_and_a_total(cameras) -> None:
    clients, _, _ = cameras
    front, rear = clients["front"], clients["rear"]
    step(front)
    step(rear)
    front.diagnostics_after(time.monotonic())
    statuses = dict(front.statuses)  # one DiagnosticArray: the node's total and one status per camera
    total, per_camera = statuses["/multi/sam2_tracker: tracker"], [statuses[f"/multi/sam2_tracker: camera {name}"]
                                                                  for name in SIZES]
    for key in ("frames_received", "frames_processed", "frames_dropped", "images_rejected"):
        assert int(total[key]) == sum(int(values[key]) for values in per_camera), key
    assert all(int(values["frames_processed"]) >= 1 for values in per_camera)


def _publish(client: Client, rate_hz: float, stop: threading.Event, sent: list) -> None:
    while not stop.is_set():
        index = next(FRAMES)
        client.camera.publish(client.image(index, *SIZES[client.camera_name]))
        sent.append(index)
        time.sleep(1.0 / rate_hz)


def test_a_slow_camera_and_a_fast_one_both_get_their_share_of_a_slow_model(cameras) -> None:
    clients, _, worker_threads = cameras
    front, rear = clients["front"], clients["rear"]
    for client in (front, rear):
        client.reset()
    # Eight objects per camera: on a CPU a step takes longer than either camera's frame interval (what is
    # asserted below holds at any speed of the model).
    for object_id in range(1, 9):
        assert front.prompt(object_id, points=[(40 * object_id, 200)], labels=[1]).success
        assert rear.prompt(object_id, points=[(20 * object_id, 100)], labels=[1]).success
    processed_before = {name: len(client.objects) for name, client in clients.items()}
    stop = threading.Event()
    sent = {"front": [], "rear": []}
    threads = [threading.Thread(target=_publish, args=(front, 30.0, stop, sent["front"])),
               threading.Thread(target=_publish, args=(rear, 5.0, stop, sent["rear"]))]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: all(len(client.objects) - processed_before[name] >= 6
                                      for name, client in clients.items()), timeout=4 * STEP_TIMEOUT)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    processed = {name: [i for i in sent[name] if i in client.objects] for name, client in clients.items()}
    assert len(processed["rear"]) >= 5 and len(processed["front"]) >= 5, processed
    if worker_threads == 1:
        # Each round takes the newest frame of every camera that has one waiting. The 30 Hz camera has one
        # waiting in nearly every round; the 5 Hz one has one in every round after one of its frames came.
        # Whatever the model's speed: the slow camera got a frame processed in as many rounds as it could,
        # min(its frames, the rounds), so the fast camera did not starve it. (A slow model: both cameras in
        # nearly every round; a fast one: every frame of the slow camera.)
        rounds = len(processed["front"])
        assert len(processed["rear"]) >= min(len(sent["rear"]), rounds) - 2, (processed, sent)
    # With a thread per camera each camera goes at the pace of its own steps (the 640x480 camera's are the
    # slower ones): no round couples them, so their counts need not match.


def test_a_round_tracks_every_camera_in_one_batch_and_a_failing_camera_costs_the_others_nothing(
    rclpy_context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process node, its worker's round called directly: one step_many for the cameras of a round; a
    rejected image leaves its camera out (counted); a failing batch is retried per camera, and the camera
    that fails alone is counted while the other is published."""
    import numpy as np
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from sam2_ros.conversions import numpy_to_image
    from sam2_ros.node import TrackerNode
    from sam2_ros.requests import PromptRequest
    from sam2_ros.worker import IMAGES_REJECTED, WORKER_ERRORS

    overrides = [Parameter("image_size", value=64), Parameter("device", value="cpu"),
                 Parameter("allow_random_weights", value=True), Parameter("cameras", value=["front", "rear"])]
    node = TrackerNode(context=rclpy_context, parameter_overrides=overrides)
    try:
        assert node.start()
        tracker = node._session.tracker
        front, rear = node._cameras["front"], node._cameras["rear"]
        batches = []
        step_many = tracker.step_many
        monkeypatch.setattr(tracker, "step_many", lambda streams, frames: batches.append(
            [s is front.stream for s in streams]) or step_many(streams, frames))

        def image(width: int, height: int, encoding: str = "rgb8") -> Image:
            msg = numpy_to_image(np.full((height, width, 3), 90, dtype=np.uint8), "rgb8", Header(frame_id="x"))
            msg.encoding = encoding
            return msg

        def processed() -> tuple:
            return front.stats.frames_processed, rear.stats.frames_processed

        node._round.process({"front": (image(64, 48), 0.0), "rear": (image(32, 48), 0.0)})
        assert batches == [[True, False]] and processed() == (1, 1)
        for camera, point in ((front, [(20.0, 20.0)]), (rear, [(10.0, 30.0)])):
            camera.book.submit_prompt(PromptRequest.from_message(make_prompt(1, points=point, labels=[1])))
        node._round.process({"front": (image(64, 48), 0.0), "rear": (image(32, 48, encoding="weird"), 0.0)})
        assert batches[-1] == [True] and processed() == (2, 1)  # the rejected image: left out of the batch
        assert rear.stats.errors[IMAGES_REJECTED] == 1 and front.stats.errors[IMAGES_REJECTED] == 0

        def rear_fails(streams, frames):  # so does every batch with it (`step` is a batch of one)
            if any(stream is rear.stream for stream in streams):
                raise RuntimeError("rear failed")
            return step_many(streams, frames)

        monkeypatch.setattr(tracker, "step_many", rear_fails)
        node._round.process({"front": (image(64, 48), 0.0), "rear": (image(32, 48), 0.0)})
        assert processed() == (3, 1) and front.stream.object_ids == [1]
        assert rear.stats.errors[WORKER_ERRORS] == 1 and front.stats.errors[WORKER_ERRORS] == 0
        # rear's stream did not move: its prompt (applied this round) waits for its next frame
        assert rear.stream.object_ids == [1] and rear.stream.frame_index == 1
    finally:
        node.stop()
        node.destroy_node()


def test_worker_threads_are_at_most_one_per_camera_and_only_with_the_eager_backend(rclpy_context) -> None:
    from rclpy.parameter import Parameter

    from sam2_ros.node import TrackerNode

    overrides = [Parameter("autostart", value=False), Parameter("cameras", value=["a", "b", "c"])]
    node = TrackerNode(context=rclpy_context, parameter_overrides=overrides)
    try:
        node.trigger_configure()
        two = node._frame_worker(2, "eager")
        assert two.thread_count == 2 and two._share == 2  # ceil(3 cameras / 2 threads) per round
        assert node._frame_worker(8, "eager").thread_count == 3  # more threads than cameras would idle
        one = node._frame_worker(1, "eager")
        assert one.thread_count == 1 and one._share is None  # every camera in each round
        # a compiled graph or an engine runs one step at a time: one thread (with a warning)
        assert node._frame_worker(2, "compile").thread_count == 1
        assert node._frame_worker(2, "tensorrt").thread_count == 1
    finally:
        node.destroy_node()

"""Detector-driven tracking in the node, over real DDS with our own detection message (`detection_boxes`).

Random weights: the tiny model predicts every object absent, so with lost_after_frames:=2 an object is LOST two
frames after it starts, which is what re-acquisition needs; the masks mean nothing. Detection arrays carry the
stamp of the frame they were made on; the test waits until the node has received an array (its
detections_received counter) before publishing that frame, so "on time" is an ordering, not a race.
"""
from __future__ import annotations

import time

import pytest

from conftest import FASTDDS_PROFILE, Processes, open_rclpy_context

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from testkit.ros_client import Client, OutputReader, ids, node_command, node_env, stamp_of, wait_until  # noqa: E402

from sam2_ros.msg import Detection, DetectionArray  # noqa: E402

FRAMES = iter(range(30_000, 1_000_000))


class DetectorClient(Client):
    """The test client plus a detector publishing on the node's `detection_boxes`."""

    def __init__(self, context, namespace: str) -> None:
        super().__init__(context, namespace=namespace)
        self.detector = self.node.create_publisher(DetectionArray, "detection_boxes",
                                                   QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def counter_value(self, name: str) -> int:
        return int(self.diagnostics[-1][1][name]) if self.diagnostics else 0

    def detect(self, index: int, *boxes: tuple) -> None:
        """Publish the detections of frame `index` and wait until the node has them."""
        before = self.counter_value("detections_received")
        array = DetectionArray(detections=[Detection(box=[float(v) for v in box], score=score, label=label,
                                                     track_id=track) for box, score, label, track in boxes])
        array.header.stamp, array.header.frame_id = stamp_of(index), self.frame_id
        self.detector.publish(array)
        assert wait_until(lambda: self.counter_value("detections_received") > before, timeout=30.0)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    processes = Processes()
    client = None
    with open_rclpy_context(FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE)) as context:
        try:
            parameters = ("image_size:=128", "device:=cpu", "allow_random_weights:=true", "lost_after_frames:=2",
                          "detection_reacquire_distance:=100.0", "detection_reacquire_after_frames:=2",
                          "diagnostics_period:=0.2", "max_objects:=3")
            proc = processes.start(*node_command(*parameters, namespace="/det"), env=node_env(tmp_path_factory))
            output = OutputReader(proc)
            assert output.wait_for("activated:", timeout=120.0), output.text()
            client = DetectorClient(context, "/det")
            client.step(next(FRAMES))
            yield client
        finally:
            if client is not None:
                client.close()
            processes.close()


def counters(client: DetectorClient) -> dict:
    values = client.diagnostics_after(time.monotonic())
    return {key: int(values[key]) for key in values if key.startswith("detections_")}


def test_boxes_start_objects_with_their_label_and_re_acquire_a_lost_one_under_its_id(detector) -> None:
    client = detector
    before = counters(client)
    first = next(FRAMES)
    client.detect(first, ((100, 100, 200, 220), 0.9, "cube", ""))
    objects = client.step(first)
    assert ids(objects) == [1] and objects.objects[0].label == "cube"
    for _ in range(3):  # random weights: absent every frame, LOST after lost_after_frames
        objects = client.step(next(FRAMES))
    assert objects.objects[0].state == objects.objects[0].STATE_LOST

    back = next(FRAMES)  # it comes back elsewhere; a ball appears too; a low-score box is ignored
    client.detect(back, ((400, 300, 500, 420), 0.8, "cube", ""), ((20, 20, 80, 90), 0.9, "ball", ""),
                  ((300, 20, 360, 90), 0.1, "cube", ""))
    objects = client.step(back)
    assert ids(objects) == [1, 2]
    assert [o.label for o in objects.objects] == ["cube", "ball"]
    after = counters(client)
    increase = {key: after[key] - before.get(key, 0) for key in after}
    assert increase["detections_started"] == 2 and increase["detections_reacquired"] == 1
    assert increase["detections_ignored"] == 1 and increase["detections_late"] == 0


def test_a_late_array_applies_to_the_next_frame_and_is_counted(detector) -> None:
    client = detector
    before = counters(client)
    missed = next(FRAMES)
    client.step(missed)  # processed before its detections arrive
    client.detect(missed, ((200, 200, 260, 260), 0.9, "cup", ""))
    objects = client.step(next(FRAMES))
    assert "cup" in [o.label for o in objects.objects]
    after = counters(client)
    assert after["detections_late"] - before["detections_late"] == 1
    assert after["detections_started"] - before["detections_started"] == 1


def test_excess_detections_are_counted_and_ignored_at_max_objects(detector) -> None:
    client = detector
    present = len(ids(client.step(next(FRAMES))))
    assert present == 3  # max_objects:=3 reached by the tests above
    before = counters(client)
    index = next(FRAMES)
    client.detect(index, ((10, 300, 60, 360), 0.9, "plate", ""), ((500, 20, 560, 80), 0.9, "plate", ""))
    assert len(ids(client.step(index))) == 3
    after = counters(client)
    assert after["detections_ignored"] - before["detections_ignored"] == 2
    assert after["detections_started"] == before["detections_started"]

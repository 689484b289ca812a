"""The one per-object record (`FrameOutputs.objects`) and the three outputs built from it: a `sam2-rt track
--json` line, a `sam2-rt track --bag` recording and the node's TrackedObjectArray agree field by field."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup): the node's messages are ROS messages")
from std_msgs.msg import Header  # noqa: E402

from sam2_ros.conversions import image_to_numpy  # noqa: E402
from sam2_ros.msg import TrackedObject  # noqa: E402
from sam2_ros.outputs import mask_message, objects_message  # noqa: E402
from sam2_rt import ObjectState, TrackResult  # noqa: E402
from sam2_rt.io.frame_outputs import FrameOutputs, ObjectOutput, box_to_roi  # noqa: E402
from sam2_rt.io.rosbag_output import MASKS_TOPIC, OBJECTS_TOPIC, BagOutput, sam2_ros_typestore  # noqa: E402
from sam2_rt.io.track_outputs import frame_record  # noqa: E402
from sam2_rt.io.video import VideoFrame  # noqa: E402
from sam2_rt.tracking.transforms import boxes_from_masks  # noqa: E402

HEIGHT, WIDTH = 40, 64
STAMP_NS = 1_700_000_000_250_000_000
FRAME_ID = "camera_optical"

# id -> (state, class label, iou, presence, roi (x_offset, y_offset, width, height), mask area); scores are
# exact in float32.
EXPECTED = {
    2: (ObjectState.OCCLUDED, "", 0.25, 0.125, (40, 20, 8, 5), 40),
    5: (ObjectState.TRACKING, "dog", 0.5, 0.75, (25, 10, 10, 10), 100),
    7: (ObjectState.TRACKING, "person", 0.8125, 0.96875, (10, 4, 20, 10), 200),
    11: (ObjectState.LOST, "car", 0.0625, 0.03125, (0, 0, 0, 0), 0),
}


def frame_outputs() -> FrameOutputs:
    """Four objects, in tracker order 7, 2, 11, 5: 7 and 5 overlap, 11 has an empty mask, 2 has no class."""
    ids = [7, 2, 11, 5]
    masks = torch.zeros(len(ids), HEIGHT, WIDTH, dtype=torch.bool)
    masks[0, 4:14, 10:30] = True
    masks[1, 20:25, 40:48] = True
    masks[3, 10:20, 25:35] = True
    result = TrackResult(
        frame_index=3, object_ids=ids, masks=masks, logits=masks.float() * 4 - 2,
        low_res_logits=torch.zeros(len(ids), 1, 4, 4), ious=torch.tensor([EXPECTED[i][2] for i in ids]),
        presence=torch.tensor([EXPECTED[i][3] for i in ids]), states=[EXPECTED[i][0] for i in ids],
        boxes=boxes_from_masks(masks),
    )
    return FrameOutputs.from_result(result).with_classes({7: "person", 11: "car", 5: "dog", 2: None})


def read_bag(path: Path) -> Dict[str, List[Any]]:
    """topic -> its deserialized messages, in order."""
    from rosbags.rosbag2 import Reader

    store = sam2_ros_typestore()
    topics: Dict[str, List[Any]] = {}
    with Reader(path) as reader:
        for connection, _, raw in reader.messages():
            topics.setdefault(connection.topic, []).append(store.deserialize_cdr(raw, connection.msgtype))
    return topics


def test_the_record_holds_each_object_once_in_id_order() -> None:
    objects = frame_outputs().objects
    assert [obj.object_id for obj in objects] == [2, 5, 7, 11]
    for obj in objects:
        state, label, score, presence, roi, area = EXPECTED[obj.object_id]
        assert obj == ObjectOutput(obj.object_id, state, label, score, presence, obj.box, roi, area)
        assert box_to_roi(np.asarray(obj.box)) == roi
    assert objects[3].box == (0.0, 0.0, 0.0, 0.0)  # the empty mask of object 11
    assert objects[2].box == (10.0, 4.0, 30.0, 14.0)


def test_json_line_rosbag_and_ros_messages_agree_field_by_field(tmp_path: Path) -> None:
    outputs = frame_outputs()
    frame = VideoFrame(index=3, rgb=np.zeros((HEIGHT, WIDTH, 3), np.uint8), time_s=0.3, stamp_ns=STAMP_NS,
                       frame_id=FRAME_ID)
    json_objects = frame_record(frame, outputs, seconds=0.02)["objects"]

    bag = BagOutput(tmp_path / "bag")
    bag.write(frame, outputs, latency_ns=20_000_000)
    bag.close()
    recorded = read_bag(tmp_path / "bag")
    (bag_objects,) = recorded[OBJECTS_TOPIC]

    header = Header(frame_id=FRAME_ID)
    header.stamp.sec, header.stamp.nanosec = divmod(STAMP_NS, 10**9)
    ros_objects = objects_message(outputs, header, latency_ns=20_000_000, dropped_frames=0).objects

    assert [o["id"] for o in json_objects] == [o.object_id for o in bag_objects.objects] \
        == [o.object_id for o in ros_objects] == [2, 5, 7, 11]
    for line, bagged, ros in zip(json_objects, bag_objects.objects, ros_objects):
        state, label, score, presence, roi, area = EXPECTED[line["id"]]
        assert line["state"] == state.name.lower() and bagged.state == ros.state == int(state)
        assert line["label"] == bagged.label == ros.label == label
        assert line["iou"] == round(score, 4) and bagged.score == ros.score == score
        assert line["presence"] == round(presence, 4) and bagged.presence == ros.presence == presence
        for msg in (bagged, ros):
            assert (msg.bbox.x_offset, msg.bbox.y_offset, msg.bbox.width, msg.bbox.height) == roi
            assert not msg.bbox.do_rectify
        assert box_to_roi(np.asarray(line["box"])) == roi
        assert line["area"] == bagged.mask_area == ros.mask_area == area
    assert [o.state for o in ros_objects] == [TrackedObject.STATE_OCCLUDED, TrackedObject.STATE_TRACKING,
                                              TrackedObject.STATE_TRACKING, TrackedObject.STATE_LOST]

    # The label images agree too: the bag's /masks and the node's masks, both mono16 of the frame's size.
    (bag_masks,) = recorded[MASKS_TOPIC]
    ros_masks = mask_message(outputs, header)
    bag_labels = np.frombuffer(bag_masks.data.tobytes(), dtype="<u2").reshape(HEIGHT, WIDTH)
    np.testing.assert_array_equal(bag_labels, image_to_numpy(ros_masks))
    np.testing.assert_array_equal(bag_labels, outputs.labels)
    assert bag_masks.encoding == ros_masks.encoding == "mono16"
    assert set(np.unique(bag_labels).tolist()) == {0, 2, 5, 7}

"""tracker.launch.py with several cameras: each camera's image topic is remapped by camera_topics, and the
single-camera arguments (image_topic, detections_topic), which the node would ignore, are refused."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from launch_fakes import Launched  # noqa: E402

from sam2_ros.parameters import LaunchArgumentError, params_file_cameras  # noqa: E402

TRACKER_LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "tracker.launch.py"


def test_camera_topics_remap_each_named_camera_s_image_topic() -> None:
    given = {"cameras": "front,rear", "camera_topics": "front=/front/image_raw, rear=/rear/image_raw"}
    node = Launched(TRACKER_LAUNCH, given).node("tracker_node")
    assert node["remappings"] == [
        ("front/image", "/front/image_raw"), ("front/image/compressed", "/front/image_raw/compressed"),
        ("rear/image", "/rear/image_raw"), ("rear/image/compressed", "/rear/image_raw/compressed")]
    assert node["parameters"][-1] == {"cameras": ["front", "rear"]}


def test_named_cameras_without_camera_topics_keep_their_own_topics() -> None:
    node = Launched(TRACKER_LAUNCH, {"cameras": "front,rear"}).node("tracker_node")
    assert node["remappings"] == []


@pytest.mark.parametrize("given,reason", [
    ({"cameras": "front,rear", "image_topic": "/camera/image_raw"},
     "image_topic:='/camera/image_raw' applies to one unnamed camera, and this node has the cameras front, rear: "
     "give each camera its topic with camera_topics:=front=/front/image_raw,rear=/rear/image_raw"),
    ({"cameras": "front,rear", "detections_topic": "/yolo/detections"},
     "detections_topic:='/yolo/detections' applies"),
    ({"camera_topics": "front=/front/image_raw"}, "needs named cameras"),
    ({"cameras": "front,rear", "camera_topics": "side=/side/image_raw"}, "names 'side', which is not one of"),
    ({"cameras": "front,rear", "camera_topics": "front:/front/image_raw"}, "expected CAMERA=TOPIC"),
    ({"cameras": "front,rear", "camera_topics": "front=/a,front=/b"}, "camera 'front' given twice"),
], ids=["image-topic", "detections-topic", "no-cameras", "unknown-camera", "syntax", "twice"])
def test_arguments_the_node_would_ignore_are_refused_before_anything_starts(given: dict, reason: str) -> None:
    with pytest.raises(LaunchArgumentError) as refused:
        Launched(TRACKER_LAUNCH, given)
    assert reason in str(refused.value)


def test_cameras_set_in_the_params_file_count_as_well(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text('/**:\n  ros__parameters:\n    cameras: ["left", "right"]\n    image_size: 256\n')
    assert params_file_cameras(str(params)) == ["left", "right"]
    with pytest.raises(LaunchArgumentError, match="the cameras left, right"):
        Launched(TRACKER_LAUNCH, {"params_file": str(params), "image_topic": "/camera/image_raw"})
    node = Launched(TRACKER_LAUNCH, {"params_file": str(params), "camera_topics": "left=/l/image"}
                    ).node("tracker_node")
    assert node["remappings"] == [("left/image", "/l/image"), ("left/image/compressed", "/l/image/compressed")]
    # the cameras argument wins over the file, as it does for the node: one unnamed camera takes image_topic
    node = Launched(TRACKER_LAUNCH, {"params_file": str(params), "cameras": '[""]',
                                     "image_topic": "/camera/image_raw"}).node("tracker_node")
    assert node["parameters"][-1] == {"cameras": [""]}
    assert node["remappings"][0] == ("image", "/camera/image_raw")
    assert params_file_cameras(str(tmp_path / "missing.yaml")) is None


def test_the_shipped_params_file_has_one_unnamed_camera() -> None:
    shipped = Path(__file__).resolve().parents[1] / "config" / "tracker.yaml"
    assert params_file_cameras(str(shipped)) == [""]

"""Launch files, launch arguments and the parameter file agree with the node.

`launch` has no PyPI wheel: the launch files run against stand-ins (tests/launch_fakes.py) that resolve
arguments and OpaqueFunctions as `ros2 launch` does, and the function that turns launch arguments into node
parameters (`sam2_ros.parameters.launch_parameters`) is tested as plain Python.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from launch_fakes import SHARE_PREFIX, Launched  # noqa: E402

from sam2_ros.parameters import (  # noqa: E402
    LAUNCH_ARGUMENTS,
    NODE_NAME,
    PARAMETER_SPECS,
    PARAMETERS,
    LaunchArgumentError,
    launch_parameters,
    launch_text,
)
from sam2_rt.modeling.config import BACKEND_NAMES, DEVICE_NAMES, MODEL_NAMES, PRECISION_NAMES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRACKER_LAUNCH = REPO / "launch" / "tracker.launch.py"
DEMO_LAUNCH = REPO / "launch" / "demo.launch.py"
DEFAULT_PARAMS_FILE = f"{SHARE_PREFIX}/sam2_ros/config/tracker.yaml"


def test_a_params_file_value_survives_when_the_argument_is_not_given() -> None:
    assert launch_parameters("/my/params.yaml", {name: "" for name in LAUNCH_ARGUMENTS}) == ["/my/params.yaml"]


def test_an_explicit_argument_overrides_the_params_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "sam2.pt"
    checkpoint.write_bytes(b"")
    parameters = launch_parameters("/my/params.yaml", {"checkpoint": str(checkpoint), "image_size": "256",
                                                       "allow_random_weights": "true", "device": ""})
    # ROS applies the entries in order: the dict after the file wins.
    assert parameters == ["/my/params.yaml", {"checkpoint": str(checkpoint), "image_size": 256,
                                              "allow_random_weights": True}]


def test_launch_arguments_are_typed_and_validated_like_the_node_parameters() -> None:
    assert launch_parameters("", {"cameras": "front, rear", "use_compressed": "False", "max_objects": "4"}) == [
        {"cameras": ["front", "rear"], "use_compressed": False, "max_objects": 4}]
    for name, text, reason in (("image_size", "100", "multiple of 32"), ("image_size", "big", "invalid literal"),
                               ("device", "tpu", "not one of auto, cuda, cpu"), ("max_objects", "0", "must be in 1"),
                               ("allow_random_weights", "yes", "expected true or false"),
                               ("cameras", "front,front", "unique"), ("checkpoint", "/nonexistent.pt", "not found")):
        with pytest.raises(LaunchArgumentError, match=reason):
            launch_parameters("", {name: text})


def test_tracker_launch_declares_every_argument_with_a_description_and_choices() -> None:
    launched = Launched(TRACKER_LAUNCH)
    assert set(launched.arguments) == {"namespace", "node_name", "image_topic", "camera_topics", "detections_topic",
                                       "params_file", "fastdds_profile", *LAUNCH_ARGUMENTS}
    assert {"allow_random_weights", "image_size", "max_objects", "cpu_threads"} <= set(LAUNCH_ARGUMENTS)
    for name, argument in launched.arguments.items():
        assert len(argument.description or "") > 15, name
    for name in LAUNCH_ARGUMENTS:
        argument = launched.arguments[name]
        assert argument.default_value == "", name  # left alone, it passes nothing
        assert launch_text(PARAMETER_SPECS[name].default) in argument.description, name
    choices = {"model": MODEL_NAMES, "device": DEVICE_NAMES, "backend": BACKEND_NAMES, "precision": PRECISION_NAMES,
               "allow_random_weights": ("true", "false"), "use_compressed": ("true", "false")}
    for name, values in choices.items():
        assert launched.arguments[name].choices == ["", *values], name
    assert "64 .. 4096" in launched.arguments["image_size"].description


def test_tracker_launch_without_arguments_passes_only_the_params_file() -> None:
    node = Launched(TRACKER_LAUNCH).node("tracker_node")
    assert node["parameters"] == [DEFAULT_PARAMS_FILE]
    assert (node["package"], node["name"], node["namespace"]) == ("sam2_ros", NODE_NAME, "")
    assert node["remappings"] == [("image", "image"), ("image/compressed", "image/compressed"),
                                  ("detections_in", "detections_in")]
    assert node["additional_env"] == {
        "FASTDDS_DEFAULT_PROFILES_FILE": f"{SHARE_PREFIX}/sam2_ros/config/fastdds_large_images.xml"}


def test_tracker_launch_of_the_readme_walkthrough() -> None:
    node = Launched(TRACKER_LAUNCH, {"allow_random_weights": "true", "image_size": "256", "device": "cpu",
                                     "image_topic": "/camera/image_raw", "namespace": "robot",
                                     "node_name": "tracker", "detections_topic": "/yolo/detections"}
                    ).node("tracker_node")
    assert node["parameters"] == [DEFAULT_PARAMS_FILE, {"allow_random_weights": True, "image_size": 256,
                                                        "device": "cpu"}]
    assert node["remappings"] == [("image", "/camera/image_raw"), ("image/compressed", "/camera/image_raw/compressed"),
                                  ("detections_in", "/yolo/detections")]
    assert (node["namespace"], node["name"]) == ("robot", "tracker")


def test_tracker_launch_rejects_an_invalid_argument_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="not one of"):
        Launched(TRACKER_LAUNCH, {"backend": "onnx"})
    with pytest.raises(LaunchArgumentError, match="image_size"):
        Launched(TRACKER_LAUNCH, {"image_size": "100"})


def test_every_node_parameter_is_reachable_from_the_params_file() -> None:
    """The launch always passes params_file; the shipped file holds every parameter at its default."""
    document = yaml.safe_load((REPO / "config" / "tracker.yaml").read_text())
    assert document["/**"]["ros__parameters"] == {spec.name: spec.default for spec in PARAMETERS}


def test_demo_launch_runs_tracker_and_player_with_random_weights_allowed() -> None:
    launched = Launched(DEMO_LAUNCH, {"checkpoint": "", "image_size": "128"})
    tracker = launched.node("tracker_node")
    assert tracker["parameters"] == [{"model": "sam2.1_hiera_tiny", "image_size": 128, "device": "auto"},
                                     {"allow_random_weights": True}]
    player = launched.node("demo_player")
    assert player["arguments"][:2] == ["--video", ""]
    # A path with a quote is passed as it is (no Python expression is evaluated).
    quoted = Launched(DEMO_LAUNCH, {"checkpoint": "", "output": "out/it's.mp4"}).node("demo_player")
    assert quoted["arguments"][-2:] == ["--output", "out/it's.mp4"]
    assert any(type(action).__name__ == "RegisterEventHandler" for action in launched.actions)


@pytest.mark.parametrize("path", [TRACKER_LAUNCH, DEMO_LAUNCH], ids=lambda p: p.name)
def test_launch_files_never_shell_out_nor_evaluate_strings(path: Path) -> None:
    source = path.read_text()
    assert not re.search(r"ExecuteProcess|\bCommand\b|subprocess|os\.system|shell\s*=|PythonExpression|\beval\(",
                         source)


def test_launched_executables_are_installed_scripts() -> None:
    cmake = (REPO / "CMakeLists.txt").read_text()
    for path in (TRACKER_LAUNCH, DEMO_LAUNCH):
        for node in Launched(path).nodes:
            executable = node.kwargs["executable"]
            assert (REPO / "scripts" / executable).is_file(), executable
            assert executable in cmake, executable


def test_readme_documents_every_parameter_with_its_default_and_when_it_applies() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Parameters"):]
    for spec in PARAMETERS:
        default = launch_text(spec.default) or '""'
        assert f"| `{spec.name}` | `{default}` | {spec.applies} |" in section, spec.name

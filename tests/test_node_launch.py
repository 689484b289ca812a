"""Launch files and the parameter file agree with the node (static checks: `launch` has no PyPI wheel).

The launch files are parsed, not run: every argument has a description, limited ones have choices, the
defaults equal the node's own defaults and config/tracker.yaml, topics are relative and remapped, and
nothing shells out.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from sam2_ros.node import PARAMETER_SPECS, PARAMETERS  # noqa: E402
from sam2_rt.config import MODEL_NAMES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRACKER_LAUNCH = REPO / "launch" / "tracker.launch.py"
DEMO_LAUNCH = REPO / "launch" / "demo.launch.py"
TRACKER_ARGUMENTS = {"namespace", "image_topic", "use_compressed", "model", "checkpoint", "device", "backend",
                     "precision", "params_file", "fastdds_profile"}
# Launch arguments that set the node parameter of the same name.
PARAMETER_ARGUMENTS = ("use_compressed", "model", "checkpoint", "device", "backend", "precision")


def launch_text(value: Any) -> str:
    """A parameter default as a launch argument spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class LaunchFile:
    """The DeclareLaunchArgument and Node calls of a launch file, read from its syntax tree."""

    def __init__(self, path: Path) -> None:
        self.source = path.read_text()
        compile(self.source, str(path), "exec")
        self.tree = ast.parse(self.source)
        self.constants = {"MODEL_NAMES": list(MODEL_NAMES)}
        for statement in self.tree.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
                if isinstance(target, ast.Name):
                    self.constants[target.id] = self.value(statement.value)
        self.arguments: Dict[str, Dict[str, Any]] = {}
        self.nodes = []
        for call in ast.walk(self.tree):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
                keywords = {k.arg: k.value for k in call.keywords}
                if call.func.id == "DeclareLaunchArgument":
                    name = self.value(call.args[0])
                    self.arguments[name] = {key: self.value(value) for key, value in keywords.items()}
                elif call.func.id == "Node":
                    self.nodes.append(keywords)

    def value(self, node: ast.AST) -> Any:
        """Literal value of an expression; constants by name; `list(X)`; other expressions as their source."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(item) for item in node.elts]
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "list":
            return list(self.value(node.args[0]))
        return ast.unparse(node)


@pytest.fixture(scope="module")
def tracker_launch() -> LaunchFile:
    return LaunchFile(TRACKER_LAUNCH)


def test_tracker_launch_declares_every_argument_with_a_description(tracker_launch: LaunchFile) -> None:
    assert set(tracker_launch.arguments) == TRACKER_ARGUMENTS
    for name, fields in tracker_launch.arguments.items():
        assert len(fields.get("description", "")) > 15, name
        assert "default_value" in fields, name


def test_tracker_launch_choices_equal_the_node_parameter_choices(tracker_launch: LaunchFile) -> None:
    for name in ("model", "device", "backend", "precision"):
        assert tracker_launch.arguments[name]["choices"] == list(PARAMETER_SPECS[name].choices), name
    assert tracker_launch.arguments["model"]["choices"] == list(MODEL_NAMES)
    assert sorted(tracker_launch.arguments["use_compressed"]["choices"]) == ["false", "true"]


def test_node_defaults_equal_the_parameter_file_and_the_launch_defaults(tracker_launch: LaunchFile) -> None:
    document = yaml.safe_load((REPO / "config" / "tracker.yaml").read_text())
    file_values = document["/**"]["ros__parameters"]
    assert file_values == {spec.name: spec.default for spec in PARAMETERS}
    for name in PARAMETER_ARGUMENTS:
        assert tracker_launch.arguments[name]["default_value"] == launch_text(PARAMETER_SPECS[name].default), name
    assert "tracker.yaml" in tracker_launch.arguments["params_file"]["default_value"]
    assert "fastdds_large_images.xml" in tracker_launch.arguments["fastdds_profile"]["default_value"]
    assert tracker_launch.arguments["image_topic"]["default_value"] == "image"


def test_tracker_launch_passes_each_argument_and_remaps_relative_topics(tracker_launch: LaunchFile) -> None:
    (node,) = tracker_launch.nodes
    assert tracker_launch.value(node["executable"]) == "tracker_node"
    assert tracker_launch.value(node["name"]) == "sam2_tracker"
    assert "LaunchConfiguration('namespace')" in tracker_launch.value(node["namespace"])
    parameters = ast.unparse(node["parameters"])
    assert "LaunchConfiguration('params_file')" in parameters
    for name in PARAMETER_ARGUMENTS:
        assert f"'{name}': ParameterValue(LaunchConfiguration('{name}')" in parameters, name
    remappings = tracker_launch.value(node["remappings"])
    assert [pair[0] for pair in remappings] == ["image", "image/compressed"]
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in ast.unparse(node["additional_env"])


@pytest.mark.parametrize("path", [TRACKER_LAUNCH, DEMO_LAUNCH], ids=lambda p: p.name)
def test_launch_files_compile_and_never_shell_out(path: Path) -> None:
    launch = LaunchFile(path)
    assert "generate_launch_description" in launch.source
    assert not re.search(r"ExecuteProcess|\bCommand\b|subprocess|os\.system|shell\s*=", launch.source)
    for name, fields in launch.arguments.items():
        assert len(fields.get("description", "")) > 10, name


def test_launched_executables_are_installed_scripts() -> None:
    cmake = (REPO / "CMakeLists.txt").read_text()
    for path in (TRACKER_LAUNCH, DEMO_LAUNCH):
        for node in LaunchFile(path).nodes:
            executable = ast.literal_eval(node["executable"])
            assert (REPO / "scripts" / executable).is_file(), executable
            assert f"scripts/{executable}" in cmake, executable


def test_demo_launch_runs_the_tracker_with_random_weights_only_without_a_checkpoint() -> None:
    demo = LaunchFile(DEMO_LAUNCH)
    assert demo.arguments["checkpoint"]["default_value"] == ""
    tracker = next(node for node in demo.nodes if demo.value(node["executable"]) == "tracker_node")
    assert "'allow_random_weights': ParameterValue(PythonExpression([\"'\", checkpoint, \"' == ''\"])" in (
        ast.unparse(tracker["parameters"])
    )
    assert "OnProcessExit" in demo.source and "Shutdown" in demo.source


def test_readme_documents_every_parameter_with_its_default() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## ROS 2 node"):readme.index("## Demo")]
    for spec in PARAMETERS:
        default = launch_text(spec.default) or '""'
        assert f"| `{spec.name}` | `{default}` |" in section, spec.name

"""Runs on Humble, Jazzy, Kilted and Rolling: a static check of the rclpy and launch API our sources use.

CI has only the Kilted wheels, so the older distributions are checked from the sources (AST) against the public
API of rclpy's humble and jazzy branches (tests/data/rclpy-humble.txt, rclpy-jazzy.txt: one dotted name a
line). A name outside both lists may only be used in sam2_ros/compat.py, behind a check, and listed in its
NEWER_API. Launch files may only use the launch / launch_ros names of HUMBLE_LAUNCH_API (checked against the
humble branches of ros2/launch and ros2/launch_ros). Python: vermin checks that nothing needs Python > 3.10.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

import pytest

from conftest import REPO

DATA = Path(__file__).resolve().parent / "data"
DISTRIBUTIONS = ("humble", "jazzy")
COMPAT = REPO / "sam2_ros" / "compat.py"
# The sources that run on a robot: the node and its parts, tools, launch files, scripts, benchmarks.
SOURCE_GLOBS = ("sam2_ros/*.py", "tools/*.py", "launch/*.py", "bench/*.py", "scripts/*")
# Classes whose methods a Node subclass inherits.
NODE_CLASSES = ("rclpy.node.Node", "rclpy.lifecycle.node.LifecycleNodeMixin", "rclpy.lifecycle.node.LifecycleNode")
NODE_BASES = {"rclpy.node.Node", "rclpy.lifecycle.LifecycleNode", "rclpy.lifecycle.node.LifecycleNode",
              "rclpy.lifecycle.Node"}

# launch / launch_ros names present on the humble branches (ros2/launch 1.0.x, ros2/launch_ros 0.19.x).
HUMBLE_LAUNCH_API = {
    "launch.LaunchDescription", "launch.LaunchContext",
    "launch.actions.DeclareLaunchArgument", "launch.actions.OpaqueFunction", "launch.actions.EmitEvent",
    "launch.actions.RegisterEventHandler", "launch.actions.SetEnvironmentVariable", "launch.actions.GroupAction",
    "launch.event_handlers.OnProcessExit", "launch.events.Shutdown",
    "launch.substitutions.LaunchConfiguration", "launch.substitutions.PathJoinSubstitution",
    "launch.substitutions.TextSubstitution", "launch.substitutions.EnvironmentVariable",
    "launch.conditions.IfCondition", "launch.conditions.UnlessCondition",
    "launch_ros.actions.Node", "launch_ros.actions.PushRosNamespace",
    "launch_ros.descriptions.ParameterValue", "launch_ros.substitutions.FindPackageShare",
}
# Keyword arguments of launch_ros.actions.Node (with ExecuteProcess's) on humble that our launch files may use.
HUMBLE_NODE_KEYWORDS = {
    "package", "executable", "name", "namespace", "parameters", "remappings", "arguments", "output",
    "emulate_tty", "additional_env", "condition", "respawn", "respawn_delay", "exec_name",
}
# Newer than Humble (Iron and later), named so that the message is explicit.
NEWER_LAUNCH_API = {
    "launch.substitutions.EqualsSubstitution", "launch.substitutions.NotEqualsSubstitution",
    "launch.substitutions.IfElseSubstitution", "launch.substitutions.AndSubstitution",
    "launch.substitutions.OrSubstitution", "launch.substitutions.StringJoinSubstitution",
}


def load_api(distribution: str) -> Set[str]:
    """The dotted names of rclpy's public API on `distribution`."""
    names = set()
    for line in (DATA / f"rclpy-{distribution}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            names.add(line.split()[0])
    return names


@dataclass(frozen=True)
class Use:
    """One use of an API name outside both lists."""

    path: str
    line: int
    name: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} ({self.why})"


class ApiChecker:
    """Finds the uses of rclpy API that humble or jazzy lacks in Python sources."""

    def __init__(self, apis: Dict[str, Set[str]], newer_methods: Set[str]) -> None:
        self.apis = apis
        common = set.intersection(*apis.values())
        self.common = common
        self.modules = {name.rsplit(".", i)[0] for name in common for i in range(1, name.count(".") + 1)} - common
        self.node_members = {
            name.rsplit(".", 1)[1] for name in common if name.rsplit(".", 1)[0] in NODE_CLASSES
        }
        # Method names of the running (newer) rclpy that no class has on humble and jazzy, leaving out names
        # that standard-library objects also have (a `proc.wait()` is not rclpy's).
        common_methods = {name.rsplit(".", 1)[1] for name in common if name.rsplit(".", 1)[0] in common}
        self.newer_methods = newer_methods - common_methods - stdlib_method_names()

    def entity(self, dotted: str) -> Optional[str]:
        """The module-level entity (module.Name) a dotted rclpy name refers to; None for a module."""
        parts = dotted.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix not in self.modules:
                return prefix
        return None

    def check(self, source: str, path: str) -> List[Use]:
        tree = ast.parse(source)
        aliases = _aliases(tree)
        own_functions = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        uses: List[Use] = []

        def resolve(node: ast.AST) -> Optional[str]:
            dotted = _dotted(node)
            if dotted is None:
                return None
            root, _, rest = dotted.partition(".")
            if root not in aliases:
                return None
            return aliases[root] + ("." + rest if rest else "")

        def flag(node: ast.AST, name: str, why: str) -> None:
            uses.append(Use(path, getattr(node, "lineno", 0), name, why))

        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rclpy":
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    if name not in self.modules and self.entity(name) not in self.common:
                        flag(node, name, "imported; not in the humble and jazzy API")
            elif isinstance(node, ast.Attribute) and not isinstance(getattr(node, "parent", None), ast.Attribute):
                name = resolve(node)
                if name is not None and name.startswith("rclpy") and (entity := self.entity(name)) is not None:
                    if entity not in self.common:
                        flag(node, entity, "not in the humble and jazzy API")
            if isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    call = item.context_expr
                    name = resolve(call.func) if isinstance(call, ast.Call) else None
                    if name is not None and name.startswith("rclpy") and f"{name}.__enter__" not in self.common:
                        flag(item.context_expr, f"{name}.__enter__", "used as a context manager")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                method = node.func.attr
                if method in self.newer_methods and method not in own_functions:
                    flag(node, method, "a method no rclpy class has on humble and jazzy")
            if isinstance(node, ast.ClassDef) and any(resolve(base) in NODE_BASES for base in node.bases):
                uses.extend(self._check_node_class(node, path))
        return uses

    def _check_node_class(self, cls: ast.ClassDef, path: str) -> List[Use]:
        """`self.x` and `super().x` in a Node subclass: ours, or a Node member on humble and jazzy."""
        own = {node.name for node in cls.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for node in ast.walk(cls):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    elements = target.elts if isinstance(target, ast.Tuple) else [target]
                    own |= {t.attr for t in elements if isinstance(t, ast.Attribute) and _is_self(t.value)}
        uses = []
        for node in ast.walk(cls):
            if not isinstance(node, ast.Attribute):
                continue
            inherited = _is_self(node.value) and node.attr not in own
            from_super = isinstance(node.value, ast.Call) and _dotted(node.value.func) == "super"
            if (inherited or from_super) and node.attr not in self.node_members:
                uses.append(Use(path, node.lineno, f"Node.{node.attr}", "not a Node member on humble and jazzy"))
        return uses


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _dotted(node: ast.AST) -> Optional[str]:
    """`a.b.c` of a Name / Attribute chain, None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _aliases(tree: ast.AST) -> Dict[str, str]:
    """Local name -> dotted name of every import in the file; also marks each Attribute's parent."""
    aliases: Dict[str, str] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child.parent = node  # type: ignore[attr-defined]
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def stdlib_method_names() -> Set[str]:
    """Method names of the standard-library objects our sources call methods on besides rclpy's."""
    import asyncio
    import concurrent.futures
    import queue
    import subprocess as sp
    import threading

    objects = (threading.Thread, threading.Condition, threading.Event, threading.Lock(), sp.Popen, queue.Queue,
               concurrent.futures.Future, asyncio.Future, dict, list, set, str, bytes)
    return {name for obj in objects for name in dir(obj)}


def installed_rclpy_methods() -> Set[str]:
    """Method names of every class of the rclpy installed here (Kilted), read from its sources."""
    spec = importlib.util.find_spec("rclpy")
    assert spec is not None and spec.origin, "rclpy is not installed (make setup)"
    names = set()
    for path in Path(spec.origin).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names |= {f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def installed_node_attributes() -> Set[str]:
    """Attributes rclpy's own Node and LifecycleNode classes set on self (a subclass must not reuse them)."""
    spec = importlib.util.find_spec("rclpy")
    assert spec is not None and spec.origin
    package = Path(spec.origin).parent
    names = set()
    for path in (package / "node.py", *(package / "lifecycle").glob("*.py")):
        for cls in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(cls, ast.ClassDef) and cls.name in ("Node", "LifecycleNodeMixin", "LifecycleNode"):
                for node in ast.walk(cls):
                    if isinstance(node, ast.Attribute) and _is_self(node.value) and isinstance(node.ctx, ast.Store):
                        names.add(node.attr)
    return names


def source_files() -> List[Path]:
    return sorted({path for pattern in SOURCE_GLOBS for path in REPO.glob(pattern)})


@pytest.fixture(scope="module")
def checker() -> ApiChecker:
    return ApiChecker({d: load_api(d) for d in DISTRIBUTIONS}, installed_rclpy_methods())


def _check_files(checker: ApiChecker, files: Iterable[Path]) -> List[Use]:
    return [use for path in files for use in checker.check(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]


def test_sources_use_only_rclpy_api_of_humble_and_jazzy_outside_the_compat_module(checker: ApiChecker) -> None:
    files = [path for path in source_files() if path != COMPAT]
    assert any(path.name == "node.py" for path in files) and any(path.name == "demo.py" for path in files)
    uses = _check_files(checker, files)
    assert not uses, "rclpy API newer than Humble outside sam2_ros/compat.py:\n" + "\n".join(map(str, uses))


def test_node_subclasses_do_not_overwrite_rclpy_node_attributes() -> None:
    """rclpy keeps e.g. its parameter services in `self._services`: a subclass assigning it loses them."""
    reserved = installed_node_attributes()
    assert "_parameter_service" in reserved
    clashes = []
    for path in source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _aliases(tree)
        for cls in ast.walk(tree):
            if isinstance(cls, ast.ClassDef) and any(aliases.get(_dotted(base) or "", "") in NODE_BASES
                                                     for base in cls.bases):
                clashes += [f"{path.name}:{node.lineno}: self.{node.attr}" for node in ast.walk(cls)
                            if isinstance(node, ast.Attribute) and _is_self(node.value)
                            and isinstance(node.ctx, ast.Store) and node.attr in reserved]
    assert not clashes, "attributes of rclpy's Node overwritten:\n" + "\n".join(clashes)


def test_compat_module_uses_newer_api_only_as_documented(checker: ApiChecker) -> None:
    from sam2_ros.compat import NEWER_API

    used = {use.name for use in _check_files(checker, [COMPAT])}
    assert used == set(NEWER_API), f"compat.py uses {sorted(used)}; NEWER_API documents {sorted(NEWER_API)}"


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("import rclpy\nwith rclpy.init(args=None):\n    pass\n", "rclpy.init.__enter__"),
        ("from rclpy.event_handler import EventHandler\n", "rclpy.event_handler.EventHandler"),
        ("import rclpy.logging\nrclpy.logging.get_logger_level('x')\n", "rclpy.logging.get_logger_level"),
        ("from rclpy.node import Node\nclass N(Node):\n    def f(self):\n        self.add_post_set_parameters_callback(print)\n",
         "Node.add_post_set_parameters_callback"),
        ("def f(node):\n    node.add_post_set_parameters_callback(print)\n", "add_post_set_parameters_callback"),
    ],
)
def test_checker_flags_api_newer_than_humble(checker: ApiChecker, snippet: str, expected: str) -> None:
    names = {use.name for use in checker.check(snippet, "snippet.py")}
    assert expected in names


def test_checker_accepts_humble_api_and_our_own_members(checker: ApiChecker) -> None:
    snippet = textwrap.dedent(
        """
        import rclpy
        from rclpy.lifecycle import LifecycleNode
        from rclpy.qos import ReliabilityPolicy
        class N(LifecycleNode):
            def __init__(self):
                super().__init__("n")
                self.x = ReliabilityPolicy.BEST_EFFORT
            def own(self):
                return self.x, self.create_lifecycle_publisher, self.get_logger(), self.own
        rclpy.init(args=None)
        rclpy.try_shutdown()
        """
    )
    assert checker.check(snippet, "snippet.py") == []


def launch_uses(source: str) -> tuple[Set[str], Set[str]]:
    """(launch / launch_ros names imported, keywords passed to launch_ros Node) of a launch file."""
    tree = ast.parse(source)
    imported, keywords = set(), set()
    node_names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("launch", "launch_ros"):
            for alias in node.names:
                imported.add(f"{node.module}.{alias.name}")
                if f"{node.module}.{alias.name}" == "launch_ros.actions.Node":
                    node_names.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names if alias.name.split(".")[0] in ("launch", "launch_ros")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _dotted(node.func) in node_names:
            keywords |= {kw.arg for kw in node.keywords if kw.arg}
    return imported, keywords


def test_launch_files_use_only_humble_launch_api() -> None:
    launch_files = sorted((REPO / "launch").glob("*.launch.py"))
    assert launch_files
    for path in launch_files:
        imported, keywords = launch_uses(path.read_text(encoding="utf-8"))
        assert imported <= HUMBLE_LAUNCH_API, f"{path.name}: not checked on humble: {sorted(imported - HUMBLE_LAUNCH_API)}"
        assert keywords <= HUMBLE_NODE_KEYWORDS, f"{path.name}: Node keywords {sorted(keywords - HUMBLE_NODE_KEYWORDS)}"


def test_launch_check_rejects_newer_launch_api() -> None:
    imported, keywords = launch_uses(
        "from launch.substitutions import EqualsSubstitution\nfrom launch_ros.actions import Node\n"
        "Node(package='p', ros_arguments=['--log-level', 'debug'])\n"
    )
    assert imported & NEWER_LAUNCH_API and not imported <= HUMBLE_LAUNCH_API
    assert "ros_arguments" in keywords - HUMBLE_NODE_KEYWORDS


VERMIN_ARGS = ["-t=3.10-", "--violations", "--no-tips", "--backport", "typing_extensions"]


def _vermin(*paths: str) -> subprocess.CompletedProcess:
    pytest.importorskip("vermin", reason="vermin is a test dependency (make setup installs it)")
    vermin = Path(sys.executable).with_name("vermin")
    return subprocess.run([str(vermin), *VERMIN_ARGS, *paths], capture_output=True, text=True, cwd=REPO)


def test_python_sources_need_no_python_newer_than_3_10() -> None:
    result = _vermin("sam2_rt", "sam2_ros", "tools", "launch", "bench", "scripts", "tests", "setup.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Analyzing" in result.stdout  # it looked at the files


def test_vermin_rejects_python_3_11_code(tmp_path: Path) -> None:
    sample = tmp_path / "new.py"
    sample.write_text("import tomllib\ntry:\n    pass\nexcept* ValueError:\n    pass\n")
    assert _vermin(str(sample)).returncode != 0


# Third-party modules imported by the node, the library and the launch files -> their rosdep key. torch
# and torch-tensorrt (optional, GPU) are installed with pip (README: "Supported ROS 2 distributions"): no key.
ROSDEP_KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "lifecycle_msgs": "lifecycle_msgs",
    "diagnostic_msgs": "diagnostic_msgs", "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs",
    "geometry_msgs": "geometry_msgs", "builtin_interfaces": "builtin_interfaces", "vision_msgs": "vision_msgs",
    "launch": "launch", "launch_ros": "launch_ros", "numpy": "python3-numpy", "cv2": "python3-opencv",
    "yaml": "python3-yaml", "tqdm": "python3-tqdm",
}
# rosbags (the CLI's rosbag2 reader/writer, pure Python) has no rosdep key either, nor timm (EdgeTAM's RepViT
# trunk; built on torch, installed with it by pip).
PIP_ONLY = {"torch", "torch_tensorrt", "tensorrt", "rosbags", "timm"}
OWN = {"sam2_ros", "sam2_rt"}


def runtime_imports() -> Set[str]:
    """Top-level third-party modules imported anywhere by the node, sam2_rt's core and the launch files."""
    files = [*REPO.glob("sam2_ros/*.py"), *REPO.glob("launch/*.py"), *REPO.glob("sam2_rt/*.py"),
             *REPO.glob("sam2_rt/modeling/*.py")]
    modules = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return {name for name in modules if name not in sys.stdlib_module_names and name not in OWN | {"__future__"}}


def test_package_xml_names_a_rosdep_key_for_every_runtime_import() -> None:
    import xml.etree.ElementTree as ET

    root = ET.parse(REPO / "package.xml").getroot()
    keys = {element.text for tag in ("depend", "exec_depend") for element in root.iter(tag)}
    conditional = {element.text: element.get("condition") for element in root.iter("exec_depend")
                   if element.get("condition")}
    imports = runtime_imports()
    assert {"rclpy", "numpy", "cv2", "diagnostic_msgs", "torch"} <= imports
    unmapped = imports - set(ROSDEP_KEYS) - PIP_ONLY
    assert not unmapped, f"imports without a rosdep key in this test: {sorted(unmapped)}"
    missing = {ROSDEP_KEYS[name] for name in imports - PIP_ONLY} - keys
    assert not missing, f"package.xml lacks {sorted(missing)}"
    assert {"lifecycle_msgs", "diagnostic_msgs", "rclpy"} <= keys
    assert "vision_msgs" in conditional  # optional: the node runs without it

"""The package layout is the architecture: layers import only earlier layers, no import cycle, no ROS in
sam2_rt, modules of a readable size, and the public API importable from `sam2_rt` (AST walk, no imports run)."""

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
# sam2_rt's subpackages, lowest layer first: each may import only itself and the ones before it.
LAYERS = ("modeling", "weights", "runtime", "tracking", "detection", "io", "cli")
ROS_MODULES = ("rclpy", "rosidl", "rcl_interfaces", "sensor_msgs", "std_msgs", "builtin_interfaces", "lifecycle_msgs",
               "diagnostic_msgs", "geometry_msgs", "sam2_ros")
MAX_LINES = 600
MAX_NODE_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> Dict[str, Path]:
    return {module_name(path): path for path in sorted((REPO / package).rglob("*.py"))}


def imports(path: Path, top_level_only: bool = False) -> List[Tuple[str, int]]:
    """(module imported, line) of every import in `path` but those under `if TYPE_CHECKING:` (for type hints
    only); `top_level_only`: only those run when the module is imported (not inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: List[Tuple[str, int]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and top_level_only:
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.dump(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno))
                # `from sam2_rt.tracking import tracker` imports the submodule sam2_rt.tracking.tracker
                found.extend((f"{child.module}.{alias.name}", child.lineno) for alias in child.names)
            visit(child, top)

    visit(tree, True)
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def test_every_module_belongs_to_a_layer() -> None:
    loose = [name for name in modules("sam2_rt") if name != "sam2_rt" and layer_of(name) < 0]
    assert loose == [], f"modules outside sam2_rt's layers {LAYERS}: {loose}"


def test_layers_import_only_earlier_layers_and_sam2_rt_never_imports_ros() -> None:
    known = modules("sam2_rt")
    problems = []
    for name, path in known.items():
        for imported, line in imports(path, top_level_only=False):
            if imported.split(".")[0] in ROS_MODULES:
                problems.append(f"{name}:{line} imports {imported} (sam2_rt has no ROS imports)")
            elif imported.startswith("sam2_rt.") and name != "sam2_rt" and layer_of(imported) > layer_of(name):
                problems.append(f"{name}:{line} ({LAYERS[layer_of(name)]}) imports {imported} "
                                f"({LAYERS[layer_of(imported)]}, a later layer)")
    assert problems == []


@pytest.mark.parametrize("package", ["sam2_rt", "sam2_ros"])
def test_no_import_cycle(package: str) -> None:
    """Not even through an import inside a function (the way a cycle is usually hidden)."""
    known = modules(package)
    graph: Dict[str, Set[str]] = {
        name: {imported for imported, _ in imports(path) if imported in known and imported != name}
        for name, path in known.items()
    }
    # A package's __init__ re-exporting its own modules is no cycle of the modules themselves.
    graph = {name: {d for d in deps if not name.startswith(d + ".") and name != package} for name, deps in graph.items()}
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component of more than one module (or a module importing itself)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                connect(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_modules_stay_readable() -> None:
    sizes = {name: len(path.read_text().splitlines()) for package in ("sam2_rt", "sam2_ros")
             for name, path in modules(package).items()}
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert too_long == {}, f"modules over {MAX_LINES} lines: split them by responsibility"
    assert sizes["sam2_ros.node"] <= MAX_NODE_LINES, "node.py is lifecycle and services only"


def test_the_public_api_is_exported_from_sam2_rt() -> None:
    tree = ast.parse((REPO / "sam2_rt" / "__init__.py").read_text())
    exported = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in node.targets))
    names = {element.value for element in exported.elts}  # type: ignore[attr-defined]
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert {"Tracker", "TrackerConfig", "TrackResult", "StreamState", "load_model", "random_model"} <= names
    assert names <= imported, f"__all__ names nothing imports: {names - imported}"

"""Stand-ins for the few `launch` / `launch_ros` classes our launch files use (those packages have no PyPI wheel).

They keep what the launch files give them and resolve substitutions the way `launch` does, so a test can run
`generate_launch_description()`, supply launch arguments as `ros2 launch ... name:=value` would, call the
OpaqueFunctions and read the Node actions they return. Only the humble API listed in
tests/test_ros_compat.py (HUMBLE_LAUNCH_API) exists here: a launch file using anything else fails to import.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

SHARE_PREFIX = "/opt/ros/fake/share"


class LaunchContext:
    def __init__(self, configurations: Dict[str, str]) -> None:
        self.launch_configurations = configurations


class LaunchDescription:
    def __init__(self, entities: Sequence[Any]) -> None:
        self.entities = list(entities)


class DeclareLaunchArgument:
    def __init__(self, name: str, *, default_value: Any = None, description: Optional[str] = None,
                 choices: Optional[List[str]] = None) -> None:
        # As launch does: a default outside the choices is an error at declaration.
        if choices is not None and isinstance(default_value, str) and default_value not in choices:
            raise ValueError(f"default {default_value!r} of {name} is not one of its choices {choices}")
        self.name, self.default_value, self.description, self.choices = name, default_value, description, choices


class OpaqueFunction:
    def __init__(self, *, function: Callable[..., list]) -> None:
        self.function = function


class EmitEvent:
    def __init__(self, *, event: Any) -> None:
        self.event = event


class RegisterEventHandler:
    def __init__(self, event_handler: Any) -> None:
        self.event_handler = event_handler


class OnProcessExit:
    def __init__(self, *, target_action: Any, on_exit: Any) -> None:
        self.target_action, self.on_exit = target_action, on_exit


class Shutdown:
    def __init__(self, *, reason: str = "") -> None:
        self.reason = reason


class LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: LaunchContext) -> str:
        return context.launch_configurations[self.name]


class FindPackageShare:
    def __init__(self, package: str) -> None:
        self.package = package

    def perform(self, context: LaunchContext) -> str:
        return f"{SHARE_PREFIX}/{self.package}"


class PathJoinSubstitution:
    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)

    def perform(self, context: LaunchContext) -> str:
        return "/".join(perform(part, context) for part in self.parts)


class Node:
    """launch_ros.actions.Node: keeps its keyword arguments (humble's names only)."""

    KEYWORDS = {"package", "executable", "name", "namespace", "parameters", "remappings", "arguments", "output",
                "emulate_tty", "additional_env"}

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - self.KEYWORDS
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {sorted(unknown)}")
        self.kwargs = kwargs


def perform(value: Any, context: LaunchContext) -> str:
    return value if isinstance(value, str) else value.perform(context)


MODULES = {
    "launch": {"LaunchContext": LaunchContext, "LaunchDescription": LaunchDescription},
    "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "OpaqueFunction": OpaqueFunction,
                       "EmitEvent": EmitEvent, "RegisterEventHandler": RegisterEventHandler},
    "launch.event_handlers": {"OnProcessExit": OnProcessExit},
    "launch.events": {"Shutdown": Shutdown},
    "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration, "PathJoinSubstitution": PathJoinSubstitution},
    "launch_ros": {},
    "launch_ros.actions": {"Node": Node},
    "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
}


def load_launch_file(path: Path) -> types.ModuleType:
    """Import a launch file with the stand-ins in place of launch / launch_ros (restored afterwards)."""
    saved = {name: sys.modules.get(name) for name in MODULES}
    try:
        for name, members in MODULES.items():
            module = types.ModuleType(name)
            module.__dict__.update(members)
            sys.modules[name] = module
        spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Launched:
    """What `ros2 launch <file> name:=value ...` would start, resolved without running anything."""

    def __init__(self, path: Path, given: Optional[Dict[str, str]] = None) -> None:
        description = load_launch_file(path).generate_launch_description()
        self.arguments = {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}
        given = dict(given or {})
        undeclared = set(given) - set(self.arguments)
        if undeclared:
            raise KeyError(f"undeclared launch arguments {sorted(undeclared)}")
        context = LaunchContext({})
        for name, argument in self.arguments.items():
            value = given.get(name, argument.default_value)
            context.launch_configurations[name] = perform(value, context)
            if argument.choices is not None and context.launch_configurations[name] not in argument.choices:
                raise ValueError(f"{name}:={context.launch_configurations[name]!r} is not one of {argument.choices}")
        self.actions: List[Any] = []
        for entity in description.entities:
            if isinstance(entity, OpaqueFunction):
                self.actions += entity.function(context)
            elif not isinstance(entity, DeclareLaunchArgument):
                self.actions.append(entity)
        self.nodes = [action for action in self.actions if isinstance(action, Node)]

    def node(self, executable: str) -> Dict[str, Any]:
        (node,) = [n.kwargs for n in self.nodes if n.kwargs["executable"] == executable]
        return node

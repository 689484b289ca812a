"""The few rclpy differences between ROS 2 Humble, Jazzy, Kilted and Rolling, in one place.

Everything else in sam2_ros uses only rclpy API that exists on Humble (the oldest supported distribution);
tests/test_ros_compat.py checks that from the sources (AST) against the public API lists of the humble and jazzy
branches of rclpy (tests/data/rclpy-*.txt), and accepts names outside those lists only here, where each is
guarded and listed in NEWER_API.

Differences handled (checked against rclpy's humble and jazzy sources, 2026-12-01):
- ``rclpy.init`` returns a context manager only from Kilted on (None on Humble and Jazzy): `rclpy_session`
  initialises and shuts down explicitly, which behaves the same everywhere.
- ``Node.add_post_set_parameters_callback`` came with Iron (absent on Humble): `add_parameter_callbacks`
  registers the validation callback and, where post-set callbacks are missing, applies the new values from the
  same on-set callback once validation succeeded (the node has no other on-set callback, so a value that
  passes validation is the value that is set).

Launch (launch/*.py): the launch files use only API present in the humble branches of ros2/launch and
ros2/launch_ros (LaunchDescription, DeclareLaunchArgument with `choices`, OpaqueFunction, EmitEvent,
RegisterEventHandler, OnProcessExit, Shutdown, LaunchConfiguration, PathJoinSubstitution; launch_ros Node with
`additional_env`/`emulate_tty`, ParameterValue, FindPackageShare). Newer helpers such as EqualsSubstitution,
NotEqualsSubstitution, IfElseSubstitution and Node's `ros_arguments` (Iron+) are avoided; the test lists the
launch names it accepts (HUMBLE_LAUNCH_API) and rejects the newer ones.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, Optional, Sequence

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

# rclpy API newer than Humble used in this module (each behind a check), with the release that added it.
NEWER_API = {
    "add_post_set_parameters_callback": "Iron (Node.add_post_set_parameters_callback)",
}

Validate = Callable[[List[Parameter]], SetParametersResult]
Apply = Callable[[List[Parameter]], None]


@contextlib.contextmanager
def rclpy_session(args: Optional[Sequence[str]] = None, signal_handlers: bool = True) -> Iterator[None]:
    """Initialise rclpy's default context and shut it down on exit.

    Same on every distribution (``with rclpy.init(...)`` only works from Kilted on). Shutting down a context
    that a signal handler already shut down is not an error.

    Arguments:
      args: command line with ROS arguments (None: sys.argv).
      signal_handlers: install rclpy's SIGINT/SIGTERM handlers, which shut the context down at once. False
        leaves the signals to the caller, who can then stop its threads before the context goes away
        (signal_handler_options exists since Galactic).
    """
    options = SignalHandlerOptions.ALL if signal_handlers else SignalHandlerOptions.NO
    rclpy.init(args=None if args is None else list(args), signal_handler_options=options)
    try:
        yield
    finally:
        rclpy.try_shutdown()


def add_parameter_callbacks(node: Node, validate: Validate, apply: Apply) -> None:
    """Validate parameter changes with `validate`; pass the accepted ones to `apply` after they are set.

    `apply` must not raise. On Humble (no post-set callbacks) it runs inside the on-set callback, right after a
    successful validation.
    """
    if hasattr(node, "add_post_set_parameters_callback"):
        node.add_on_set_parameters_callback(validate)
        node.add_post_set_parameters_callback(apply)
        return

    def validate_then_apply(parameters: List[Parameter]) -> SetParametersResult:
        result = validate(parameters)
        if result.successful:
            apply(parameters)
        return result

    node.add_on_set_parameters_callback(validate_then_apply)

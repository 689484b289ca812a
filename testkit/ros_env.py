"""The ROS side of the tests and benchmarks: a private network for every process they start, and the
processes and rclpy contexts they open (always ended)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "config" / "fastdds_large_images.xml"



def use_private_ros_network() -> None:
    """Set this process's ROS environment (inherited by every process it starts): a private domain (from the
    pid, so two runs on one host do not meet), localhost-only discovery, a temporary log folder, Fast DDS. Call
    it before anything imports rclpy."""
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="sam2_ros_test_logs_")
    os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"


def ros_env(**extra: str) -> dict[str, str]:
    """The environment for a ROS process started by a test (private domain, local discovery)."""
    env = dict(os.environ)
    env.update(extra)
    return env


class Processes:
    """Starts processes for one test and ends every one of them afterwards (terminate, then kill)."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=env or ros_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def open_rclpy_context(**env: str) -> Iterator:
    """An initialised rclpy context, with `env` set in os.environ while it lives; shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

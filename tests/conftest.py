"""Shared fixtures. ROS tests run on a private domain, localhost-only discovery and a temp log dir.

Every test starts from the same process-wide torch state and must leave it as it found it (`torch_state`):
a thread count or a precision flag left behind by one test changes the float arithmetic of every later one,
which made a parity test fail only after the rest of the suite (issue 22).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
import torch
import torch._dynamo
import torch._inductor.config

from testkit.ros_env import (  # noqa: F401  (tests import these from here too)
    FASTDDS_PROFILE,
    REPO,
    Processes,
    open_rclpy_context,
    ros_env,
    use_private_ros_network,
)

# Set before anything imports rclpy, so the in-process participants use the same private settings as
# the processes the tests start.
use_private_ros_network()


# ------------------------------------------------------------------------------------ process-wide torch state

def _flush_denormal() -> bool:
    """Whether torch flushes denormal floats to zero (torch.set_flush_denormal has no getter)."""
    return torch.tensor([1e-323], dtype=torch.float64).item() == 0.0


def _set_flush_denormal(value: bool) -> None:
    torch.set_flush_denormal(value)


# name: (read, restore) of every process-wide setting that changes float results or what torch computes with.
# torch.set_num_interop_threads is left out: it can be called once per process, before any parallel work.
_TORCH_SETTINGS: Dict[str, Tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "torch.get_num_threads()": (torch.get_num_threads, torch.set_num_threads),
    "torch.get_float32_matmul_precision()": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    "torch.backends.mkldnn.enabled": (lambda: torch.backends.mkldnn.enabled,
                                      lambda value: setattr(torch.backends.mkldnn, "enabled", value)),
    "torch.backends.mkldnn.matmul.fp32_precision": (
        lambda: torch.backends.mkldnn.matmul.fp32_precision,
        lambda value: setattr(torch.backends.mkldnn.matmul, "fp32_precision", value)),
    "torch.backends.mkldnn.conv.fp32_precision": (
        lambda: torch.backends.mkldnn.conv.fp32_precision,
        lambda value: setattr(torch.backends.mkldnn.conv, "fp32_precision", value)),
    "torch.backends.cudnn.benchmark": (lambda: torch.backends.cudnn.benchmark,
                                       lambda value: setattr(torch.backends.cudnn, "benchmark", value)),
    "torch.backends.cudnn.deterministic": (lambda: torch.backends.cudnn.deterministic,
                                           lambda value: setattr(torch.backends.cudnn, "deterministic", value)),
    "torch.are_deterministic_algorithms_enabled()": (
        lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        lambda value: torch.use_deterministic_algorithms(value[0], warn_only=value[1])),
    "torch.get_default_dtype()": (torch.get_default_dtype, torch.set_default_dtype),
    "torch.is_grad_enabled()": (torch.is_grad_enabled, torch.set_grad_enabled),
    "flush denormal": (_flush_denormal, _set_flush_denormal),
}
# Modules whose functions tests patch (torch.cuda by the TensorRT stand-ins): a patch must not outlive its test.
_PATCHABLE_MODULES = (torch, torch.nn.functional, torch.Tensor, torch.cuda, torch.compiler, torch.backends.cpu)


def torch_settings() -> Dict[str, Any]:
    """The current value of every process-wide torch setting in _TORCH_SETTINGS, by name."""
    return {name: read() for name, (read, _) in _TORCH_SETTINGS.items()}


def _module_functions() -> Dict[Tuple[Any, str], Any]:
    return {(module, name): value for module in _PATCHABLE_MODULES
            for name, value in vars(module).items() if callable(value)}


@contextlib.contextmanager
def _torch_state_kept(what: str) -> Iterator[None]:
    """Fails naming `what` if torch's process-wide settings or functions differ afterwards, after putting
    them back as they were (so that the tests after it run as if nothing happened)."""
    settings, functions = torch_settings(), _module_functions()
    yield
    changed = {name: value for name, value in torch_settings().items() if value != settings[name]}
    for name in changed:
        _TORCH_SETTINGS[name][1](settings[name])
    left = [f"{name}: {settings[name]!r} -> {value!r}" for name, value in changed.items()]
    for (module, name), value in _module_functions().items():
        if (module, name) in functions and functions[(module, name)] is not value:
            setattr(module, name, functions[(module, name)])
            left.append(f"{module.__name__}.{name} replaced")
    if left:
        pytest.fail(f"{what} left process-wide torch state changed (restore it; restored now): {'; '.join(left)}",
                    pytrace=False)


@pytest.fixture(autouse=True)
def torch_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with torch's global generator seeded with 0 and must leave torch's process-wide
    settings and functions as it found them: one that changes them fails at teardown, naming what it left."""
    with _torch_state_kept(request.node.nodeid):
        torch.manual_seed(0)
        yield


@pytest.fixture(scope="module", autouse=True)
def torch_state_of_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """The module-scoped fixtures must leave torch's process-wide state as they found it too (checked after the
    module); dynamo's and inductor's configuration and dynamo's caches are put back as they were before it.

    Per module, not per test: a module-scoped compiled tracker raises dynamo's recompile limit by the graphs
    it needs (sam2_rt.runtime.backends.CompiledRunner) for the tests that share it.
    """
    configs = [(config, config.get_config_copy()) for config in (torch._dynamo.config, torch._inductor.config)]
    try:
        with _torch_state_kept(f"the module fixtures of {request.node.nodeid}"):
            yield
    finally:
        torch._dynamo.reset()
        for config, saved in configs:
            now = config.get_config_copy()
            config.load_config({name: value for name, value in saved.items() if now.get(name) != value})


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
def rclpy_context():
    """An initialised rclpy context for in-test participants, shut down afterwards."""
    with open_rclpy_context() as context:
        yield context

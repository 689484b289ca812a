"""`worker_threads` auto (0, the default): one thread per camera up to the cores on a CPU with the eager
backend, one elsewhere; the choice is logged with the configuration and reported in /diagnostics."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 wheels (make setup)")
from rclpy.parameter import Parameter  # noqa: E402

from sam2_ros.node import TrackerNode  # noqa: E402
from sam2_ros.parameters import PARAMETER_SPECS  # noqa: E402
from sam2_ros.worker import available_cores, choose_worker_threads, resolve_cpu_threads  # noqa: E402


def test_auto_is_the_default() -> None:
    assert PARAMETER_SPECS["worker_threads"].default == 0 and PARAMETER_SPECS["cpu_threads"].default == 0


@pytest.mark.parametrize("cameras,cores,threads", [(1, 2, 1), (2, 2, 2), (4, 2, 2), (4, 16, 4), (3, 1, 1)])
def test_auto_on_a_cpu_with_eager_runs_one_thread_per_camera_up_to_the_cores(cameras: int, cores: int,
                                                                             threads: int) -> None:
    chosen, reason = choose_worker_threads(0, cameras, "cpu", "eager", cores=cores)
    assert chosen == threads and reason.startswith("auto: one per camera")


@pytest.mark.parametrize("device,backend", [("cuda", "eager"), ("cpu", "compile"), ("cuda", "tensorrt")])
def test_auto_elsewhere_runs_one_thread(device: str, backend: str) -> None:
    assert choose_worker_threads(0, 4, device, backend, cores=16) == (1, f"auto: 1 on {device} with backend {backend}")


def test_an_explicit_count_is_kept_up_to_one_per_camera_and_needs_eager() -> None:
    assert choose_worker_threads(2, 4, "cuda", "eager", cores=2)[0] == 2  # asked for: kept, even on a GPU
    assert choose_worker_threads(8, 3, "cpu", "eager", cores=2)[0] == 3
    assert choose_worker_threads(2, 4, "cpu", "compile", cores=2)[0] == 1


def test_auto_cpu_threads_share_the_cores_but_one_among_the_worker_threads() -> None:
    # 2 cores, 2 worker threads: 1 torch thread each (the measured setup of bench/RESULTS.md "Worker threads")
    assert [resolve_cpu_threads(0, 2, workers) for workers in (1, 2)] == [1, 1]
    assert [resolve_cpu_threads(0, 16, workers) for workers in (1, 2, 4)] == [15, 7, 3]
    assert resolve_cpu_threads(3, 16, 4) == 3  # an explicit count is per worker thread, as given


def test_the_choice_is_in_the_configuration_and_in_diagnostics(rclpy_context) -> None:
    overrides = [Parameter("image_size", value=64), Parameter("device", value="cpu"),
                 Parameter("autostart", value=False), Parameter("allow_random_weights", value=True),
                 Parameter("cameras", value=["a", "b", "c"])]
    node = TrackerNode(context=rclpy_context, parameter_overrides=overrides)
    try:
        assert node.start()
        expected = min(3, available_cores())
        assert node._session.worker.thread_count == expected
        values = {value.key: value.value for value in node.diagnostics().status[0].values}
        reason = f"auto: one per camera, at most one per core ({available_cores()})"
        assert values["worker_threads"] == f"{expected} ({reason})"
        assert f"{expected} worker thread" in values["configuration"] and reason in values["configuration"]
    finally:
        node.stop()
        node.destroy_node()

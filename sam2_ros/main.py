"""The tracker node's process: `main` (the entry point of `sam2-ros-tracker` and `ros2 run sam2_ros
tracker_node`) creates the node, forwards sam2_rt's Python logging to its ROS logger (`_RosLogHandler`), spins
one single-threaded executor on its own thread (`_spin`: rclpy's InvalidHandle at lifecycle transitions is
retried a bounded number of times) and handles SIGINT / SIGTERM itself: the worker stops first, then the ROS
context. Exit code 0, or 1 when the executor's thread died of an exception or a model step did not finish in
time (respawn sees a crash).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections import deque
from typing import Deque, Optional, Sequence

from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor

from sam2_ros.compat import rclpy_session
from sam2_ros.node import TrackerNode

# The spinning thread retries rclpy's InvalidHandle (see `_spin`) at most this many times within
# INVALID_HANDLE_WINDOW_S: each retry is one entity destroyed while the executor collected it, which happens
# at lifecycle transitions; more means a handle stays invalid and the executor would spin hot, deaf, forever.
INVALID_HANDLE_RETRIES = 100
INVALID_HANDLE_WINDOW_S = 10.0
# The node spins one single-threaded executor: every callback is short (an image is stored for the worker, a
# request validated and queued, a diagnostics message built), the model runs on the worker thread. rclpy's
# MultiThreadedExecutor cost ~50-60 % of a core while images flowed and halved the frame rate on 2 cores
# (bench/RESULTS.md, "Several cameras").


class _RosLogHandler(logging.Handler):
    """Forwards Python `logging` records of sam2_rt to the node's ROS logger."""

    def __init__(self, node: TrackerNode) -> None:
        super().__init__(level=logging.INFO)
        self._logger = node.get_logger().get_child("sam2_rt")

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(message)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(message)
        else:
            self._logger.info(message)


def _spin(executor: Executor, stop: threading.Event, retries: int = INVALID_HANDLE_RETRIES,
          window_s: float = INVALID_HANDLE_WINDOW_S) -> Optional[BaseException]:
    """Spin until the executor is shut down; a context shut down from outside also ends the node. Sets `stop`
    when it ends, and returns None then, or the exception that ended it (a callback's bug, ...).

    Stopping the node from the main thread (deactivate, cleanup) destroys publishers, subscriptions and
    services while the spinning thread may be collecting them for its wait set: rclpy (Humble to Kilted) then raises InvalidHandle
    in the spinning thread (ros2/rclpy#1206, #1284), which would end it and leave the node deaf. The destroyed
    entity is no longer listed by the next round, so spinning simply goes on, up to `retries` times within
    `window_s` seconds: more is a handle that stays invalid, and ends the spinning like any other error.
    """
    retried: Deque[float] = deque()
    try:
        while True:
            try:
                executor.spin()
                return None
            except InvalidHandle as err:
                now = time.monotonic()
                retried.append(now)
                while retried[0] < now - window_s:
                    retried.popleft()
                if len(retried) > retries:
                    failure = RuntimeError(f"rclpy raised InvalidHandle {len(retried)} times within {window_s:g} s "
                                           f"while spinning (last: {err}): a handle stays invalid")
                    failure.__cause__ = err
                    return failure
    except ExternalShutdownException:
        return None
    except Exception as err:  # noqa: BLE001 - reported by main, which then exits non-zero
        return err
    finally:
        stop.set()


class _ExecutorThread(threading.Thread):
    """The thread that spins the node's executor (`_spin`); `error` is what ended it, None for a clean end."""

    def __init__(self, executor: Executor, stop: threading.Event) -> None:
        super().__init__(name="sam2_executor")
        self._spun, self._stop_event = executor, stop  # threading.Thread has a _stop of its own
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        self.error = _spin(self._spun, self._stop_event)


def main(args: Optional[Sequence[str]] = None) -> int:
    """Entry point of `sam2-ros-tracker` and `ros2 run sam2_ros tracker_node` (takes --ros-args).

    SIGINT and SIGTERM are handled here, not by rclpy: the worker stops (finishing and publishing the frame in
    progress) before the executor and the ROS context shut down, so nothing publishes into a dead context.
    Returns 0 after a signal; 1 when the executor's thread died of an exception (logged with its traceback) or
    a model step was still running when the node stopped, so that respawn and systemd see a failure.
    """
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    status = 0
    with rclpy_session(args, signal_handlers=False):
        node = TrackerNode()
        node.sets_process_threads = True  # this process is the node's own
        handler = _RosLogHandler(node)
        library_logger = logging.getLogger("sam2_rt")
        library_logger.addHandler(handler)
        library_logger.setLevel(logging.INFO)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = _ExecutorThread(executor, stop)
        try:
            if node.get_parameter("autostart").value and not stop.is_set():
                node.start()
            spinner.start()
            while not stop.wait(timeout=0.5):  # a timed wait: the signal handler runs between two waits
                pass
        finally:
            if not node.stop():
                status = 1
            executor.shutdown()
            if spinner.is_alive():
                spinner.join()
            if spinner.error is not None:
                error = spinner.error
                node.get_logger().fatal(
                    "the executor thread died, the node stops (exit status 1):\n"
                    + "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip())
                status = 1
            library_logger.removeHandler(handler)
            node.destroy_node()
    return status


if __name__ == "__main__":
    raise SystemExit(main())

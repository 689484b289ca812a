"""Polling for state that has no callback (the ROS graph, a service future)."""

import time
from typing import Callable


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Whether `predicate` holds within `timeout` seconds, checked every `period` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(period)
    return True

"""Lifecycle transitions over ROS 2 services that survive a lost answer.

Fast DDS sends a service answer only once the server's answer writer has matched the client's answer reader,
and gives up after 100 ms ("failed to send response (timeout)"). A request sent right after `wait_for_service`
by a new client can therefore run on the node while its answer never arrives; on a loaded 2-core machine this
was seen in CI. A transition is not idempotent (configuring twice fails), so it is never just sent again: when
no answer arrives, the node's state (an idempotent `get_state`) tells whether the transition ran.
"""

import logging
import time
from typing import Any

from testkit.waiting import wait_until

LOG = logging.getLogger(__name__)

# The primary state each transition ends in (lifecycle_msgs/Transition ids 1..4 and the shutdowns 5..7).
GOAL_STATES = {1: "inactive", 2: "unconfigured", 3: "active", 4: "inactive",
               5: "finalized", 6: "finalized", 7: "finalized"}
# A primary state named while a transition runs is one of these (the node answers get_state between callbacks).
TRANSITION_STATES = {"configuring", "cleaningup", "activating", "deactivating", "shuttingdown", "errorprocessing"}


def _answer(client: Any, request: Any, timeout: float) -> Any:
    """The answer to one request within `timeout` seconds, or None (the pending request is dropped)."""
    future = client.call_async(request)
    if wait_until(future.done, timeout, period=0.005):
        return future.result()
    client.remove_pending_request(future)
    return None


def lifecycle_state(get_state: Any, timeout: float, answer_s: float = 5.0) -> str:
    """The node's lifecycle state label, asking again every `answer_s` seconds until `timeout`.

    Raises:
      TimeoutError: the service is missing or never answers.
    """
    from lifecycle_msgs.srv import GetState

    deadline = time.monotonic() + timeout
    if not get_state.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {get_state.srv_name} not available")
    while True:
        answer = _answer(get_state, GetState.Request(), min(answer_s, max(0.0, deadline - time.monotonic())))
        if answer is not None:
            return str(answer.current_state.label)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {get_state.srv_name}")


def change_state(change_state_client: Any, get_state: Any, transition_id: int, timeout: float,
                 answer_s: float = 10.0) -> bool:
    """Trigger a lifecycle transition; whether it succeeded.

    When no answer arrives within `answer_s` seconds, the node's state decides: the transition's goal state means
    it ran (its answer was lost: logged as a warning), a transition state means it is still running (asked
    again), the start state means the request itself was lost (sent again).

    Raises:
      TimeoutError: the services are missing, or neither an answer nor the goal state within `timeout` seconds.
    """
    from lifecycle_msgs.srv import ChangeState

    deadline = time.monotonic() + timeout
    if not change_state_client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {change_state_client.srv_name} not available")
    goal = GOAL_STATES[transition_id]
    request = ChangeState.Request()
    request.transition.id = transition_id
    answer = _answer(change_state_client, request, answer_s)
    while answer is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer from {change_state_client.srv_name} and the node is not {goal}")
        state = lifecycle_state(get_state, left)
        if state == goal:
            LOG.warning("transition %d ran on the node (now %s) but its answer was lost", transition_id, state)
            return True
        if state in TRANSITION_STATES:
            time.sleep(min(answer_s, max(0.0, deadline - time.monotonic())) / 10)
            continue
        LOG.warning("transition %d: no answer and the node is still %s: sending it again", transition_id, state)
        answer = _answer(change_state_client, request, min(answer_s, max(0.0, deadline - time.monotonic())))
    return bool(answer.success)

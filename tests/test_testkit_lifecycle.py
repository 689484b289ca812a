"""The shared lifecycle helper tells a lost answer from a failed transition (fake service clients, no DDS)."""

from typing import Any, Callable, List, Optional

import pytest

from testkit.lifecycle import change_state  # noqa: E402


class Future:
    def __init__(self, result: Any) -> None:
        self._result = result

    def done(self) -> bool:
        return self._result is not None

    def result(self) -> Any:
        return self._result


class FakeClient:
    """A service client whose answer comes from `answer(request)` (a Future of None: no answer)."""

    def __init__(self, srv_name: str, answer: Callable[[Any], Future], node: "FakeNode") -> None:
        self.srv_name, self._answer, self._node = srv_name, answer, node

    def wait_for_service(self, timeout_sec: float) -> bool:
        return True

    def call_async(self, request: Any) -> Future:
        return self._answer(request)

    def remove_pending_request(self, future: Future) -> None:
        self._node.dropped += 1


class FakeNode:
    """A lifecycle node whose answers can be lost: `lose` holds, per change_state request, whether the request
    itself is lost ("request"), only its answer ("answer"), or nothing (None)."""

    def __init__(self, state: str, lose: List[Optional[str]], fail: bool = False) -> None:
        self.state, self.lose, self.fail = state, list(lose), fail
        self.ran: List[int] = []
        self.dropped = 0

    def change_state(self, request: Any) -> Future:
        from lifecycle_msgs.srv import ChangeState

        loss = self.lose.pop(0) if self.lose else None
        if loss == "request":
            return Future(None)
        self.ran.append(request.transition.id)
        goal = {1: "inactive", 3: "active"}[request.transition.id]
        start = {1: "unconfigured", 3: "inactive"}[request.transition.id]
        success = self.state == start and not self.fail
        if success:
            self.state = goal
        return Future(None if loss == "answer" else ChangeState.Response(success=success))

    def get_state(self, request: Any) -> Future:
        from lifecycle_msgs.msg import State
        from lifecycle_msgs.srv import GetState

        return Future(GetState.Response(current_state=State(label=self.state)))

    def change_state_client(self) -> FakeClient:
        return FakeClient("/fake/change_state", self.change_state, self)

    def get_state_client(self) -> FakeClient:
        return FakeClient("/fake/get_state", self.get_state, self)


def run(node: FakeNode, transition: int) -> bool:
    return change_state(node.change_state_client(), node.get_state_client(), transition, timeout=5.0, answer_s=0.05)


def test_an_answered_transition_runs_once() -> None:
    node = FakeNode("unconfigured", lose=[None])
    assert run(node, 1) and node.ran == [1] and node.state == "inactive" and node.dropped == 0


def test_a_lost_answer_is_read_from_the_state_and_the_transition_is_not_sent_again() -> None:
    node = FakeNode("unconfigured", lose=["answer"])
    assert run(node, 1) and node.ran == [1] and node.state == "inactive" and node.dropped == 1


def test_a_lost_request_is_sent_again() -> None:
    node = FakeNode("inactive", lose=["request", None])
    assert run(node, 3) and node.ran == [3] and node.state == "active" and node.dropped == 1


def test_a_failed_transition_is_a_failure_even_when_its_first_request_was_lost() -> None:
    node = FakeNode("inactive", lose=["request", None], fail=True)
    assert not run(node, 3) and node.ran == [3] and node.state == "inactive"


def test_no_answer_and_no_goal_state_times_out() -> None:
    node = FakeNode("inactive", lose=["request"] * 1000)
    with pytest.raises(TimeoutError, match="not active"):
        change_state(node.change_state_client(), node.get_state_client(), 3, timeout=0.3, answer_s=0.05)

"""The node's /diagnostics message, as a pure function of a plain snapshot of the node (`NodeSnapshot`: the
state and its level while inactive, the model session while active, each camera's figures, recent faults and
objects): one status for the whole node (its totals also count the requests that named no camera of it) and,
when the cameras are named, one per camera. The level reflects the last `diagnostics_window` seconds: ERROR or
WARN with the reason and the fix while inactive, WARN with random weights or recent faults, else OK.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from sam2_ros.worker import total_snapshot


@dataclass(frozen=True)
class SessionFacts:
    """What /diagnostics says of an active node's model."""

    description: str
    device: str
    random_weights: bool
    worker_threads: str  # "<count> (<reason>)"
    compilations: Mapping[str, int] = field(default_factory=dict)  # graphs compiled / engines built per component


@dataclass(frozen=True)
class CameraFacts:
    """A camera's figures (`NodeStats.snapshot`), faults within the window (`NodeStats.recent_faults`), objects."""

    figures: Mapping[str, float]
    faults: Mapping[str, int]
    objects: Sequence[int] = ()


@dataclass(frozen=True)
class NodeSnapshot:
    """The node as /diagnostics reports it."""

    node_name: str  # fully qualified
    stamp: Any  # builtin_interfaces/Time
    state: str  # what the node says of its state (while inactive: what happened and what to do)
    state_level: bytes  # the level while inactive
    window_s: float  # diagnostics_window
    session: Optional[SessionFacts]  # None while inactive
    cameras: Mapping[str, CameraFacts]  # "" = the only, unnamed camera
    unrouted: CameraFacts  # the requests that named no camera of the node


def diagnostics_message(node: NodeSnapshot) -> DiagnosticArray:
    """The /diagnostics message of `node`: the node's status (and each camera's, when they are named)."""
    total_faults = sum((Counter(camera.faults) for camera in node.cameras.values()), Counter(node.unrouted.faults))
    totals = total_snapshot({**{name: camera.figures for name, camera in node.cameras.items()},
                             "(no camera)": node.unrouted.figures})
    objects = [obj for camera in node.cameras.values() for obj in camera.objects]
    statuses = [_status(node, "tracker", totals, dict(total_faults), objects)]
    if list(node.cameras) != [""]:
        statuses += [_status(node, f"camera {name}", camera.figures, camera.faults, camera.objects)
                     for name, camera in node.cameras.items()]
    array = DiagnosticArray(status=statuses)
    array.header.stamp = node.stamp
    return array


def _status(node: NodeSnapshot, what: str, figures: Mapping[str, float], faults: Mapping[str, int],
            objects: Sequence[int]) -> DiagnosticStatus:
    """One DiagnosticStatus: the level reflects the last `window_s` seconds; totals are values."""
    session = node.session
    if session is None:
        level, message = node.state_level, node.state
    elif session.random_weights:
        level, message = DiagnosticStatus.WARN, "running with RANDOM weights: masks are meaningless"
    elif faults:
        listed = ", ".join(f"{count} {name}" for name, count in sorted(faults.items()))
        level, message = DiagnosticStatus.WARN, f"in the last {node.window_s:g} s: {listed}"
    else:
        level, message = DiagnosticStatus.OK, f"tracking {len(objects)} object(s) at {figures['rate_hz']:.1f} Hz"
    values: Dict[str, str] = {name: f"{value:.2f}" if isinstance(value, float) else str(value)
                              for name, value in figures.items()}
    values.update(objects=str(len(objects)), object_ids=" ".join(map(str, objects)), state=node.state,
                  configuration=session.description if session is not None else "",
                  worker_threads=session.worker_threads if session is not None else "",
                  recent_faults=str(sum(faults.values())))
    if session is not None:
        # Graphs compiled / engines built per component: after the warm-up they never move.
        values.update({f"compilations_{name}": str(count) for name, count in session.compilations.items()})
    key_values: List[KeyValue] = [KeyValue(key=key, value=value) for key, value in values.items()]
    return DiagnosticStatus(level=level, name=f"{node.node_name}: {what}", message=message,
                            hardware_id=session.device if session is not None else "", values=key_values)

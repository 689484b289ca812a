"""The node's QoS profiles, by readable names: images keep only the newest sample (depth 1, reliability a
parameter), prompts are never lost before the request queue refuses them with a reason, outputs and detector
boxes keep a few samples of slack, /diagnostics is published as diagnostic_updater publishes it.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from sam2_ros.requests import MAX_QUEUED_REQUESTS

# Images: keep only the newest sample (depth 1); reliability is a parameter.
_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
# Prompts must not be lost: the subscription keeps more samples than the request queue holds, so a burst that
# reaches the node fills the queue and the excess is refused with a reason rather than dropped unseen by DDS.
PROMPT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2 * MAX_QUEUED_REQUESTS,
                        reliability=ReliabilityPolicy.RELIABLE)
# Outputs: reliable (also serves best-effort subscribers), a few frames of slack for slow consumers.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
# Detector boxes: a few arrays of slack (they are matched to frames by stamp).
DETECTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# /diagnostics, as diagnostic_updater publishes it.
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def image_qos(reliability: str) -> QoSProfile:
    """QoS of the image subscription: keep_last depth 1, volatile, reliability by name."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )

"""sam2_rt: real-time SAM 2 / SAM 2.1 in pure PyTorch (no ROS imports).

The entry points, in the order a newcomer meets them:

    from sam2_rt import Tracker, TrackerConfig, load_model, random_model
    model = load_model("sam2.1_hiera_tiny", "sam2.1_hiera_tiny.pt", device="cuda")   # Meta's checkpoint, strict
    tracker = Tracker(model, TrackerConfig(backend="compile", max_objects=16))
    tracker.warmup()                                   # fixed-shape backends: every program before frame 0
    stream = tracker.create_stream()                   # one per camera
    tracker.add_prompt(stream, 1, points=[[320, 240]], labels=[1], frame_size=(480, 640))
    result = tracker.step(stream, frame)               # TrackResult: ids, masks, boxes, scores, states
"""
from sam2_rt.weights.checkpoint import CheckpointError, load_model, random_model
from sam2_rt.modeling.config import MODEL_NAMES, ModelConfig, get_config
from sam2_rt.tracking.tracker import ObjectState, StreamState, Tracker, TrackerConfig, TrackerInputError, TrackResult

__all__ = [
    "CheckpointError",
    "MODEL_NAMES",
    "ModelConfig",
    "ObjectState",
    "StreamState",
    "TrackResult",
    "Tracker",
    "TrackerConfig",
    "TrackerInputError",
    "get_config",
    "load_model",
    "random_model",
]

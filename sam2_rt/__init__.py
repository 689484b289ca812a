"""sam2_rt: real-time SAM 2 / SAM 2.1 in pure PyTorch (no ROS imports).

The entry points, in the order a newcomer meets them:

    from sam2_rt import Tracker, TrackerConfig, load_model, random_model
    model = load_model("sam2.1_hiera_tiny", "sam2.1_hiera_tiny.pt", device="cuda")   # Meta's checkpoint, strict
    tracker = Tracker(model, TrackerConfig(backend="compile", max_objects=16))
    tracker.warmup()                                   # fixed-shape backends: every program before frame 0
    stream = tracker.create_stream()                   # one per camera
    tracker.add_prompt(stream, 1, points=[[320, 240]], labels=[1], frame_size=(480, 640))
    result = tracker.step(stream, frame)               # TrackResult: ids, masks, boxes, scores, states

The subpackages, each layer importing only the ones before it:

    modeling   SAM 2 / 2.1 itself (Hiera, prompt encoder, mask decoder, memory attention and encoder), configs
    weights    Meta's checkpoints: names, download, strict weights-only loading, random weights
    runtime    how the components run: eager, torch.compile, TensorRT; fixed shapes, caches
    tracking   the streaming tracker: prompts, per-object state, bounded memory bank, one step per frame
    detection  a detector's boxes matched to tracks: new objects, re-acquired ones
    io         video and bag input, image message encodings, prompt files, per-frame outputs
    cli        the `sam2-rt` command
"""
from sam2_rt.modeling.config import MODEL_NAMES, ModelConfig, get_config
from sam2_rt.tracking.config import TrackerConfig, WarmupReport
from sam2_rt.tracking.state import (
    MAX_OBJECT_ID,
    ObjectState,
    PreparedPrompt,
    StreamSnapshot,
    StreamState,
    TrackerInputError,
    TrackResult,
)
from sam2_rt.tracking.tracker import Tracker
from sam2_rt.weights.checkpoint import CheckpointError, load_model, random_model

__all__ = [
    "CheckpointError",
    "MAX_OBJECT_ID",
    "MODEL_NAMES",
    "ModelConfig",
    "ObjectState",
    "PreparedPrompt",
    "StreamSnapshot",
    "StreamState",
    "TrackResult",
    "Tracker",
    "TrackerConfig",
    "TrackerInputError",
    "WarmupReport",
    "get_config",
    "load_model",
    "random_model",
]

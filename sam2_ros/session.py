"""The model session of an active node (`Session`): what activate builds (`create_session`: the model, the
tracker with its backend and warm-up, the worker, torch's CPU threads, the configuration the node logs and
reports in /diagnostics; `association_config`: each camera's detection-association policy) and deactivate
frees (`return_freed_heap_memory` gives the freed heap back).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Callable

import torch

from sam2_ros.parameters import NodeSettings
from sam2_ros.worker import FrameWorker, resolve_cpu_threads
from sam2_rt.detection.decisions import AssociationConfig
from sam2_rt.weights.loading import MissingCheckpointError, build_model, resolve_checkpoint, resolve_device
from sam2_rt import Tracker, TrackerConfig


def return_freed_heap_memory() -> bool:
    """Give the C heap's free memory back to the operating system (glibc's ``malloc_trim``); whether it could.

    Freed model weights otherwise stay in glibc's per-thread arenas: the node's RSS would not drop on deactivate,
    and each activation (run by whichever executor thread serves the transition) fills another arena (measured:
    +500 MiB over the first three lifecycle cycles). False where the C library has no malloc_trim (musl, macOS).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True

# Object ids travel as uint16: the association policy issues no larger one.
MAX_OBJECT_ID = 65535


class ActivationError(RuntimeError):
    """The node cannot activate with its current parameters (the message says what to change)."""


@dataclass
class Session:
    """What exists while the node is active: the model's tracker and the worker."""

    tracker: Tracker
    worker: FrameWorker
    description: str
    device: str
    random_weights: bool


def create_session(settings: NodeSettings, cameras: int, frame_worker: Callable[[int, str, str], FrameWorker],
                   set_process_threads: bool) -> Session:
    """Load the model and build what an activation runs: the tracker (for `cameras` streams), the worker
    (`frame_worker(worker_threads, backend, device_type)`) and the description the node logs and reports.

    `set_process_threads`: set torch's (process-wide) CPU thread count from cpu_threads. ActivationError says
    what to change when the parameters cannot be served (device, missing checkpoint).
    """
    try:
        device = resolve_device(settings.device)
    except ValueError as err:
        raise ActivationError(str(err)) from None
    # Random weights only as a fallback: a checkpoint that exists is always used.
    random_weights = settings.allow_random_weights and resolve_checkpoint(settings.model, settings.checkpoint) is None
    try:
        model, weights = build_model(settings.model, settings.checkpoint, settings.image_size, device,
                                     random_weights)
    except MissingCheckpointError as err:
        raise ActivationError(
            f"{err}; or set the parameter 'checkpoint', or allow_random_weights:=true to run without one "
            "(demos and tests only)"
        ) from None
    # An unavailable backend falls back (tensorrt -> compile -> eager) with a warning naming the reason.
    tracker = Tracker(
        model,
        TrackerConfig(
            max_objects=settings.max_objects,
            max_conditioning_frames=settings.max_conditioning_frames,
            lost_after_frames=settings.lost_after_frames,
            precision=settings.precision,
            backend=settings.backend,
            motion=settings.motion,
        ),
    )
    backend = tracker.backend
    worker = frame_worker(settings.worker_threads, backend.used, device.type)
    cpu_note = ""
    if device.type == "cpu":
        if set_process_threads:
            torch.set_num_threads(resolve_cpu_threads(settings.cpu_threads, worker_threads=worker.thread_count))
        each = " each" if worker.thread_count > 1 else ""
        cpu_note = f" (torch threads: {torch.get_num_threads()}{each})"
    warmup = ""
    if settings.warmup:
        # Compiled backends build (or load) every shape now, for the frames of every camera in one batch:
        # a live stream never waits for a build.
        report = tracker.warmup(max_streams=cameras)
        warmup = f", warm-up {report.seconds:.1f} s" if report.events else ""
    description = (
        f"model {settings.model} at {settings.image_size} px on {device}{cpu_note}, {tracker.precision}"
        f"{' (auto)' if settings.precision == 'auto' else ''}, "
        f"backend {backend.used}{'' if backend.used == backend.requested else f' (asked: {backend.requested})'}"
        f"{warmup}, weights: {weights}, "
        f"{worker.thread_count} worker thread{'s' if worker.thread_count > 1 else ''} ({worker.reason})"
    )
    return Session(tracker=tracker, description=description, device=str(device),
                   random_weights=random_weights, worker=worker)


def association_config(settings: NodeSettings) -> AssociationConfig:
    """The detection-association policy of each camera (the detection_* parameters, max_objects)."""
    return AssociationConfig(
        iou_threshold=settings.detection_iou_threshold, score_threshold=settings.detection_min_score,
        reacquire_max_distance=settings.detection_reacquire_distance,
        reacquire_occluded_after_frames=settings.detection_reacquire_after_frames,
        refresh_every_n_frames=settings.detection_refresh_frames,
        remove_lost_after_frames=settings.detection_remove_lost_frames,
        max_objects=settings.max_objects, max_object_id=MAX_OBJECT_ID,
    )

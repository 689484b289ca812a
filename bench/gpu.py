"""One prepared GPU benchmark: our tracker on every backend and precision against Meta's SAM2VideoPredictor,
on the same frames and weights, in one run.

    PYTHONPATH=. python bench/gpu.py --out out/gpu.json            # on a GPU machine (bench/gpu_run.sh)
    PYTHONPATH=. python bench/gpu.py --device cpu --smoke --out x.json   # end to end at CI size

What runs (defaults: tiny at 1024, 60 frames, 1 / 4 / 16 objects, a time budget of 400 s):
  - ours: backends eager, compile, compile + CUDA graphs, tensorrt (when torch_tensorrt imports), each in
    fp32 and bf16; every variant is warmed up first (Tracker.warmup, timed) and must compile nothing after;
  - Meta's SAM2VideoPredictor (when `sam2` imports), plain and vos_optimized (torch.compile max-autotune),
    bf16 autocast as Meta's own VOS benchmark runs it, and fp32; each in a child process with a timeout.
Variants run in order of importance (reference, Meta, our best candidates, the rest); a variant that needs
more than the budget has left (MIN_SECONDS) is recorded as skipped, never silently dropped.

Per variant and object count, after an untimed pass over the first WARM_FRAMES frames (library set-up;
Meta's lazy compilations): FPS over frames 1..T-1 (frame 0 carries the prompts and is reported apart),
per-component milliseconds per frame (CUDA events around each per-frame component), peak GPU memory during
the stream, and the IoU of its masks against ours in fp32 eager (mean and min over frames and objects).

Weights: seeded random (no checkpoint on the GPU machine), with the object-score head shifted so that
objects are present; Meta gets exactly our state_dict. Frames: a synthetic clip of moving shapes
(`sam2_rt.io.synthetic`, numpy only) at the model's resolution (no resize on either side), one click on each,
written as JPEG (quality 100) for Meta's loader and read back, so both see the same pixels. Meta preloads and
normalises its frames in init_state (not timed); our timing includes preprocessing from the uint8 frame.

Writes a JSON file; prints one JSON line per run as it goes and a table last.

Models (`--model`, any of sam2_rt's: SAM 2 / 2.1 or "edgetam"; image sizes of EdgeTAM are multiples of 256): Meta's
predictor runs only for Meta's SAM 2 models (its sam2 package has no EdgeTAM); with `--model edgetam` the runs are
ours alone. A variant of another model than --model is named with that model's prefix, `edgetam:ours-compile-cg-bf16`,
and runs on the same frames, clicks, image size and object counts right where it is listed; the default list has
EdgeTAM beside the main model's compile+cudagraphs bf16 and eager bf16. Issue 20's goal: EdgeTAM >= 2x tiny's
frames/s on the same GPU and backend ("model_ratios" in the JSON: each such run over the main model's run of the
same variant and object count).

Cameras mode (`--cameras 1 2 4`, issue 12): instead of the matrix above, our variants track K streams at once
(`Tracker.step_many`, one batch per frame: what the node does with K cameras), each stream its own shifted copy
of the clip with --objects[0] clicked objects, warmed up for K streams; per K: total frames/s (K x frames per
second) and its ratio to K = 1. GPU goal: 4 cameras batched >= 2.5x the frames/s of one. Not yet run on a GPU.

    PYTHONPATH=. python bench/gpu.py --cameras 1 2 4 --objects 1 --out out/gpu_cameras.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sam2_rt.modeling.config import MODEL_NAMES  # noqa: E402
from sam2_rt.weights.checkpoint import random_model  # noqa: E402
from sam2_rt import Tracker, TrackerConfig  # noqa: E402
from sam2_rt.io.synthetic import SyntheticClip  # noqa: E402
from sam2_rt.tracking.transforms import preprocess  # noqa: E402

LOG = logging.getLogger("bench.gpu")
COMPONENT_METHODS = ("encode_image", "attend_memory", "decode_tracked", "encode_memory")
# Meta's config file per model name (within the installed sam2 package).
META_CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
# Seconds a variant needs at least (warm-up included) before it is started: past the budget it is skipped.
MIN_SECONDS = {"eager": 20.0, "compile": 150.0, "tensorrt": 300.0, "plain": 30.0, "vos": 120.0}
# Untimed frames streamed before each timed stream (cuDNN / cuBLAS set-up; Meta's lazy compilations, which
# recompile while its memory grows over the first max_obj_ptrs_in_encoder frames).
WARM_FRAMES = 17
# Random weights score every object about 0 ("absent": every mask the constant -1024); shifted, they are present.
OBJECT_SCORE_SHIFT = 4.0
# First frame of the steady state: frame 0 is prompted, and the memory is full once the last
# max_obj_ptrs_in_encoder - 1 = 15 frames were tracked (SAM 2 / 2.1 and EdgeTAM).
STEADY_FROM = 16


@dataclass(frozen=True)
class Variant:
    """One thing to measure."""

    name: str  # e.g. "ours compile+cudagraphs"
    side: str  # "ours" or "meta"
    precision: str  # "fp32" or "bf16"
    backend: str = "eager"  # ours: eager / compile / tensorrt; meta: plain / vos
    cuda_graphs: bool = False
    model: Optional[str] = None  # ours only: another model than --model (None: --model's)

    @property
    def slug(self) -> str:
        """The name --variants takes, e.g. ours-compile-cg-bf16, meta-vos-bf16, edgetam:ours-eager-bf16."""
        slug = "-".join([self.side, self.backend] + (["cg"] if self.cuda_graphs else []) + [self.precision])
        return f"{self.model}:{slug}" if self.model else slug


# Every mask IoU is against this variant's masks; it runs first.
REFERENCE = Variant("ours eager", "ours", "fp32")


@dataclass
class Run:
    """The measurements of one variant at one object count (one JSON line)."""

    variant: str
    side: str
    backend: str
    precision: str
    objects: int
    status: str = "ok"
    fps: Optional[float] = None
    ms_per_frame: Optional[float] = None
    first_frame_ms: Optional[float] = None
    # frames from STEADY_FROM on (every object's memory full: the steady state of a long stream)
    steady_fps: Optional[float] = None
    component_ms: Dict[str, float] = field(default_factory=dict)
    # ours: per tracked frame, the step's time outside the four components (preprocessing, memory reads and
    # writes, launches, host syncs, upsampling the masks): wall time minus the components' CUDA-event times
    outside_ms: Optional[float] = None
    peak_gpu_mib: Optional[float] = None
    iou_mean: Optional[float] = None
    iou_min: Optional[float] = None
    warmup_s: Optional[float] = None  # ours: Tracker.warmup
    total_s: Optional[float] = None  # the whole variant: build, warm-up (Meta: compilation) and every stream
    compiled_after_warmup: Optional[int] = None  # ours: graphs / engines built after warm-up (must be 0)
    compile_s: Optional[float] = None  # Meta: its untimed first pass over WARM_FRAMES frames (compilation included)
    model: str = ""  # the model measured (--model, or the variant's own)


# --------------------------------------------------------------------------- frames and prompts


def jpeg_roundtrip(frames: np.ndarray, folder: Path) -> np.ndarray:
    """Write frames as 00000.jpg ... (quality 100) for Meta's loader; return them as decoded (what both see)."""
    from PIL import Image

    decoded = []
    for index, frame in enumerate(frames):
        path = folder / f"{index:05d}.jpg"
        Image.fromarray(frame).save(path, quality=100)
        decoded.append(np.asarray(Image.open(path).convert("RGB")))
    return np.stack(decoded)


def packed(masks: torch.Tensor) -> np.ndarray:
    """(N, H, W) bool masks as packed bits (N, H, W / 8) uint8 on the CPU."""
    return np.packbits(masks.cpu().numpy(), axis=-1)


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU per object of two packed (N, H, W/8) mask stacks; 1 where both are empty."""
    inter = np.unpackbits(a & b, axis=-1).reshape(a.shape[0], -1).sum(1)
    union = np.unpackbits(a | b, axis=-1).reshape(a.shape[0], -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


# --------------------------------------------------------------------------- timing


class Clock:
    """Wall time of a section that ends with every device kernel done (CUDA synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class TimedRunner:
    """Wraps a Tracker's runner and times its four per-frame components (CUDA events on CUDA)."""

    def __init__(self, runner: Any, device: torch.device) -> None:
        self._runner = runner
        self._cuda = device.type == "cuda"
        self._pending: List[Tuple[str, Any, Any]] = []
        self._cpu_frame: Dict[str, float] = {}  # CPU: milliseconds of each component since the last collect
        self.totals: Dict[str, float] = {name: 0.0 for name in COMPONENT_METHODS}
        for name in COMPONENT_METHODS:
            setattr(self, name, self._timed(name, getattr(runner, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def _timed(self, name: str, method: Callable) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self._cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = method(*args, **kwargs)
                end.record()
                self._pending.append((name, start, end))
                return out
            begin = time.perf_counter()
            out = method(*args, **kwargs)
            elapsed = (time.perf_counter() - begin) * 1e3
            self.totals[name] += elapsed
            self._cpu_frame[name] = self._cpu_frame.get(name, 0.0) + elapsed
            return out

        return call

    def collect(self) -> float:
        """Add the finished CUDA events' times to the totals (after a synchronisation); returns the milliseconds
        of the components since the last collect."""
        frame = 0.0
        for name, start, end in self._pending:
            elapsed = start.elapsed_time(end)
            self.totals[name] += elapsed
            frame += elapsed
        self._pending.clear()
        frame += sum(self._cpu_frame.values())
        self._cpu_frame.clear()
        return frame

    def reset(self) -> None:
        self._pending.clear()
        self._cpu_frame.clear()
        self.totals = {name: 0.0 for name in COMPONENT_METHODS}


def peak_mib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------- ours


def build_model(name: str, image_size: int, device: torch.device) -> torch.nn.Module:
    """Seeded random weights (the same for a name and size in every process), objects made present."""
    model = random_model(name, image_size, device)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += OBJECT_SCORE_SHIFT
    return model


def tracker_config(variant: Variant, max_objects: int, compiler: str, cache_root: Optional[Path]) -> TrackerConfig:
    return TrackerConfig(max_objects=max_objects, precision=variant.precision, backend=variant.backend,
                         compiler=compiler, cuda_graphs=variant.cuda_graphs,
                         compile_cache_dir=str(cache_root / "compile") if cache_root else None)


def run_ours(
    variant: Variant, model: torch.nn.Module, frames: np.ndarray, clicks: np.ndarray, counts: Sequence[int],
    device: torch.device, compiler: str, cache_root: Optional[Path] = None,
) -> Tuple[List[Run], Dict[int, List[np.ndarray]]]:
    """Warm up one of our variants, then stream the frames with each object count; returns runs and masks."""
    config = tracker_config(variant, max(counts), compiler, cache_root)
    tracker = Tracker(model, config)
    if tracker.backend.used != variant.backend:
        reason = "; ".join(tracker.backend.reasons)
        return [Run(variant.name, "ours", variant.backend, variant.precision, n, status=f"unavailable: {reason}")
                for n in counts], {}
    start = time.perf_counter()
    tracker.warmup(object_counts=counts)
    warmup_s = time.perf_counter() - start
    after_warmup = sum(tracker.compilations.values())
    timed = TimedRunner(tracker.runner, device)
    tracker.runner = timed
    clock = Clock(device)
    runs, masks = [], {}
    size = frames.shape[1]
    for count in counts:
        for timed_pass, pass_frames in ((False, frames[:WARM_FRAMES]), (True, frames)):
            reset_peak(device)
            stream = tracker.create_stream()
            seconds, frame_masks, outside = [], [], []
            for index, frame in enumerate(pass_frames):
                begin = clock.now()
                if index == 0:
                    for obj in range(count):
                        tracker.add_prompt(stream, obj + 1, points=clicks[obj:obj + 1], labels=[1],
                                           frame_size=(size, size))
                    timed.reset()
                result = tracker.step(stream, frame)
                seconds.append(clock.now() - begin)
                outside.append(1e3 * seconds[-1] - timed.collect())
                if timed_pass:
                    frame_masks.append(packed(result.masks))
        tracked = len(frames) - 1
        steady = seconds[STEADY_FROM:]
        runs.append(Run(
            variant.name, "ours", variant.backend, variant.precision, count,
            fps=tracked / sum(seconds[1:]),
            ms_per_frame=1e3 * sum(seconds[1:]) / tracked,
            first_frame_ms=1e3 * seconds[0],
            steady_fps=len(steady) / sum(steady) if steady else None,
            outside_ms=sum(outside[1:]) / tracked,
            component_ms={name: total / len(frames) for name, total in timed.totals.items()},
            peak_gpu_mib=peak_mib(device),
            warmup_s=warmup_s,
            compiled_after_warmup=sum(tracker.compilations.values()) - after_warmup,
        ))
        masks[count] = frame_masks
    for run in runs:
        run.total_s = time.perf_counter() - start
    return runs, masks


def run_cameras(
    variant: Variant, model: torch.nn.Module, frames: np.ndarray, clicks: np.ndarray, cameras: Sequence[int],
    num_objects: int, device: torch.device, compiler: str,
) -> List[Dict[str, Any]]:
    """One of our variants tracking K streams together (step_many) for each K of `cameras`; one dict per K."""
    config = TrackerConfig(max_objects=num_objects, precision=variant.precision, backend=variant.backend,
                           compiler=compiler, cuda_graphs=variant.cuda_graphs)
    tracker = Tracker(model, config)
    base = dict(variant=variant.name, precision=variant.precision, objects_per_camera=num_objects)
    if tracker.backend.used != variant.backend:
        return [dict(base, cameras=k, status="unavailable: " + "; ".join(tracker.backend.reasons)) for k in cameras]
    start = time.perf_counter()
    tracker.warmup(object_counts=[num_objects], max_streams=max(cameras))
    warmup_s = time.perf_counter() - start
    after_warmup = sum(tracker.compilations.values())
    clock = Clock(device)
    size, total = frames.shape[1], len(frames)
    lines = []
    for count in cameras:
        # each camera sees the clip from another starting frame
        clips = [np.roll(frames, -7 * camera, axis=0) for camera in range(count)]
        for timed_pass, length in ((False, min(WARM_FRAMES, total)), (True, total)):
            reset_peak(device)
            streams = [tracker.create_stream() for _ in range(count)]
            for stream in streams:
                for obj in range(num_objects):
                    tracker.add_prompt(stream, obj + 1, points=clicks[obj:obj + 1], labels=[1],
                                       frame_size=(size, size))
            seconds = []
            for index in range(length):
                begin = clock.now()
                tracker.step_many(streams, [clip[index] for clip in clips])
                seconds.append(clock.now() - begin)
        tracked = sum(seconds[1:])
        lines.append(dict(base, cameras=count, status="ok", fps=count * (total - 1) / tracked,
                          ms_per_round=1e3 * tracked / (total - 1), peak_gpu_mib=peak_mib(device),
                          warmup_s=warmup_s, compiled_after_warmup=sum(tracker.compilations.values()) - after_warmup))
    one = next((line["fps"] for line in lines if line["cameras"] == 1 and line.get("fps")), None)
    for line in lines:
        line["fps_vs_one_camera"] = round(line["fps"] / one, 3) if one and line.get("fps") else None
    return lines


def cameras_goal(lines: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Issue 12's GPU goal: 4 cameras batched >= 2.5x the frames/s of one, per variant."""
    return {f"{line['variant']} {line['precision']}": dict(ratio=line["fps_vs_one_camera"], target=2.5,
                                                           met=line["fps_vs_one_camera"] >= 2.5)
            for line in lines if line["cameras"] == 4 and line.get("fps_vs_one_camera") is not None}


# --------------------------------------------------------------------------- warm starts and memory attention


def warm_start(variant: Variant, args: argparse.Namespace, counts: Sequence[int], cache_root: Path,
               workdir: Path) -> Dict[str, Any]:
    """A second process warms `variant` up for `counts` as run_ours did, with our compile cache (filled by that
    run) and torch's own caches empty, as after a reboot: its warm-up seconds and what it loaded / compiled."""
    spec = dict(model=variant.model or args.model, image_size=args.image_size, device=args.device, counts=list(counts),
                precision=variant.precision, cuda_graphs=variant.cuda_graphs, compiler=args.compiler,
                cache=str(cache_root), out=str(workdir / "warm_start.json"))
    spec_path = workdir / "warm_start_spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(workdir / "inductor_after_reboot"),
               TRITON_CACHE_DIR=str(workdir / "triton_after_reboot"))
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, "--warmup-child", str(spec_path)], capture_output=True,
                              text=True, timeout=300, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        return dict(status="skipped: over its 300 s time budget")
    if done.returncode != 0:
        return dict(status="failed: " + " | ".join(done.stderr.strip().splitlines()[-3:]))
    result = json.loads(Path(spec["out"]).read_text())
    return dict(result, status="ok", process_s=round(time.perf_counter() - start, 1))


def warmup_child(spec_path: Path) -> None:
    """The process of `warm_start`: build the model and tracker, warm up, write the report."""
    spec = json.loads(spec_path.read_text())
    device = torch.device(spec["device"])
    model = build_model(spec["model"], spec["image_size"], device)
    variant = Variant("warm start", "ours", spec["precision"], "compile", spec["cuda_graphs"])
    tracker = Tracker(model, tracker_config(variant, max(spec["counts"]), spec["compiler"], Path(spec["cache"])))
    report = tracker.warmup(object_counts=spec["counts"])
    actions: Dict[str, int] = {}
    for event in report.events:
        actions[event.action] = actions.get(event.action, 0) + 1
    Path(spec["out"]).write_text(json.dumps(dict(warmup_s=round(report.seconds, 1), graphs=actions)))


def attention_times(model: torch.nn.Module, frames: np.ndarray, clicks: np.ndarray, counts: Sequence[int],
                    device: torch.device, compiler: str, repeats: int = 20) -> List[Dict[str, Any]]:
    """Each memory-attention implementation alone, bf16 on CUDA (fp32 elsewhere), on a steady-state memory of
    N objects (a stream tracked past STEADY_FROM frames): ms per call (CUDA events, after warm-up calls) and
    achieved TFLOP/s from the FLOP count of what it computes (torch.utils.flop_counter).

      eager steady       SAM2Model.attend_memory over the filled slots, no mask (what eager runs)
      eager masked       every slot (4 conditioning + 6 recent, all pointer slots) with the key mask
      compiled masked    the fixed-shape graph of ramp-up frames (every slot + mask)
      compiled steady    the mask-free steady-state graph (exactly the filled slots)
    """
    from torch.utils.flop_counter import FlopCounterMode

    from sam2_rt.runtime.export import AutocastExport, component_module

    precision = "bf16" if device.type == "cuda" else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    lines = []
    for count in counts:
        tracker = Tracker(model, TrackerConfig(max_objects=count, precision=precision))
        stream = tracker.create_stream()
        size = frames.shape[1]
        for obj in range(count):
            tracker.add_prompt(stream, obj + 1, points=clicks[obj:obj + 1], labels=[1], frame_size=(size, size))
        for index in range(STEADY_FROM + 1):  # (the clip repeats when shorter: --smoke)
            tracker.step(stream, frames[index % len(frames)])
        rows, index = list(range(count)), stream.frame_index
        num_maskmem = model.config.num_maskmem
        steady = stream.memory.read(rows, index, num_maskmem, torch.float32)
        full = stream.memory.read(rows, index, num_maskmem, torch.float32, compact=False)
        assert steady.complete and not full.complete, "the stream's memory must be full (steady state)"
        with torch.inference_mode():
            image = preprocess(frames[(STEADY_FROM + 1) % len(frames)], model.config.image_size, device)
            _, _, feat, pos = model.forward_image(image)
        masked_inputs = (feat, pos, full.mem_feats, full.mem_pos[:1, :1], full.mem_tpos_index, full.mem_valid,
                         full.ptrs, full.ptr_tpos, full.ptr_valid)
        steady_inputs = (feat, pos, steady.mem_feats, steady.mem_pos[:1, :1], steady.mem_tpos_index, steady.ptrs,
                         steady.ptr_tpos)
        eager_masked = AutocastExport(component_module(model, "memory_attention"), dtype)
        eager_steady = AutocastExport(component_module(model, "memory_attention", steady=True), dtype)
        impls = {
            "eager steady": (eager_steady, steady_inputs),
            "eager masked": (eager_masked, masked_inputs),
            "compiled masked": (torch.compile(eager_masked, backend=compiler, dynamic=False), masked_inputs),
            "compiled steady": (torch.compile(eager_steady, backend=compiler, dynamic=False), steady_inputs),
        }
        for name, (function, inputs) in impls.items():
            line: Dict[str, Any] = dict(implementation=name, objects=count, precision=precision,
                                        memory_tokens=int(inputs[2].shape[1] * model.config.memory_tokens))
            try:
                with torch.inference_mode():
                    with FlopCounterMode(display=False) as counter:
                        (eager_steady if "steady" in name else eager_masked)(*inputs)
                    compile_start = time.perf_counter()
                    for _ in range(3):
                        function(*inputs)
                    line["first_calls_s"] = round(time.perf_counter() - compile_start, 1)
                    line["ms"] = _time_calls(function, inputs, repeats, device)
                line["tflops"] = round(counter.get_total_flops() / (line["ms"] * 1e-3) / 1e12, 1)
            except Exception as err:  # noqa: BLE001 - one implementation failing must not end the benchmark
                line["status"] = f"failed: {type(err).__name__}: {err}"[:300]
            print(json.dumps(dict(attention=line)), flush=True)
            lines.append(line)
        torch._dynamo.reset()
    return lines


def _time_calls(function: Callable, inputs: Sequence[torch.Tensor], repeats: int, device: torch.device) -> float:
    """Milliseconds per call of function(*inputs), averaged over `repeats` calls (CUDA events on CUDA)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(repeats):
            function(*inputs)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / repeats
    begin = time.perf_counter()
    for _ in range(repeats):
        function(*inputs)
    return 1e3 * (time.perf_counter() - begin) / repeats


# --------------------------------------------------------------------------- Meta, in a child process


def meta_worker(spec_path: Path) -> None:
    """Run Meta's predictor as the spec says; write its runs (JSON) and masks (npz) where the spec says."""
    spec = json.loads(spec_path.read_text())
    from sam2.build_sam import build_sam2_video_predictor

    device = torch.device(spec["device"])
    overrides = [f"++model.image_size={spec['image_size']}", "++model.fill_hole_area=0"]
    predictor = build_sam2_video_predictor(META_CONFIGS[spec["model"]], ckpt_path=None, device=str(device),
                                           hydra_overrides_extra=overrides, vos_optimized=spec["vos"])
    predictor.load_state_dict(torch.load(spec["weights"], map_location=device, weights_only=True), strict=True)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["precision"]]
    clock = Clock(device)
    clicks = np.asarray(spec["clicks"], dtype=np.float32)
    runs, masks = [], {}
    state = predictor.init_state(spec["frames"])
    for count in spec["counts"]:
        warm_s = 0.0
        for last_frame in (min(WARM_FRAMES, spec["num_frames"]) - 1, None):  # an untimed pass, then the timed one
            predictor.reset_state(state)
            reset_peak(device)
            seconds, frame_masks = [], []
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                begin = clock.now()
                for obj in range(count):
                    predictor.add_new_points_or_box(state, 0, obj + 1, points=clicks[obj:obj + 1],
                                                    labels=np.array([1], dtype=np.int32))
                for _, _, logits in predictor.propagate_in_video(state, max_frame_num_to_track=last_frame):
                    seconds.append(clock.now() - begin)
                    frame_masks.append(packed(logits[:, 0] > 0))
                    begin = clock.now()
            if last_frame is not None:
                warm_s = sum(seconds)
        tracked = len(seconds) - 1
        steady = seconds[STEADY_FROM:]
        runs.append(dict(fps=tracked / sum(seconds[1:]), ms_per_frame=1e3 * sum(seconds[1:]) / tracked,
                         first_frame_ms=1e3 * seconds[0], peak_gpu_mib=peak_mib(device), objects=count,
                         steady_fps=len(steady) / sum(steady) if steady else None, compile_s=warm_s))
        masks[str(count)] = np.stack(frame_masks)
        # after every count: a run cut short by its timeout still reports the counts it finished
        np.savez(spec["masks_out"], **masks)
        Path(spec["runs_out"]).write_text(json.dumps(runs))


def run_meta(
    variant: Variant, workdir: Path, spec: Dict[str, Any], counts: Sequence[int], timeout_s: float
) -> Tuple[List[Run], Dict[int, List[np.ndarray]]]:
    """Meta's predictor in a child process (a hard timeout; Meta's Hydra and compile state stay out of ours)."""
    tag = variant.name.replace(" ", "_").replace("+", "_")
    spec = dict(spec, vos=variant.backend == "vos", precision=variant.precision, counts=list(counts),
                runs_out=str(workdir / f"{tag}.json"), masks_out=str(workdir / f"{tag}.npz"))
    spec_path = workdir / f"{tag}_spec.json"
    spec_path.write_text(json.dumps(spec))

    def failed(status: str) -> Tuple[List[Run], Dict[int, List[np.ndarray]]]:
        return [Run(variant.name, "meta", variant.backend, variant.precision, n, status=status) for n in counts], {}

    start = time.perf_counter()
    status = "ok"
    try:
        done = subprocess.run([sys.executable, __file__, "--meta-worker", str(spec_path)], capture_output=True,
                              text=True, timeout=timeout_s, cwd=REPO)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            return failed(f"failed: {' | '.join(tail)}")
    except subprocess.TimeoutExpired:
        status = f"cut short: over its {timeout_s:.0f} s time budget"
    seconds = time.perf_counter() - start
    if not Path(spec["runs_out"]).exists():
        return failed(f"skipped: over its {timeout_s:.0f} s time budget (its compilation included)")
    runs = [Run(variant.name, "meta", variant.backend, variant.precision, total_s=seconds, **values)
            for values in json.loads(Path(spec["runs_out"]).read_text())]
    finished = {run.objects for run in runs}
    runs += [Run(variant.name, "meta", variant.backend, variant.precision, n, status=status)
             for n in counts if n not in finished]
    with np.load(spec["masks_out"]) as archive:
        masks = {int(count): list(archive[count]) for count in archive.files}
    return runs, masks


# --------------------------------------------------------------------------- the whole benchmark


# The model compared with --model on the same GPU and backend (issue 20: EdgeTAM >= 2x tiny's frames/s).
COMPARED_MODEL = "edgetam"

ALL_VARIANTS = (
    REFERENCE,
    dataclasses.replace(REFERENCE, model=COMPARED_MODEL),  # its masks: the reference of the EdgeTAM rows' IoU
    Variant("ours compile+cudagraphs", "ours", "bf16", "compile", cuda_graphs=True),
    Variant("ours compile+cudagraphs", "ours", "bf16", "compile", cuda_graphs=True, model=COMPARED_MODEL),
    Variant("meta vos_optimized", "meta", "bf16", "vos"),
    Variant("ours eager", "ours", "bf16"),
    Variant("ours eager", "ours", "bf16", model=COMPARED_MODEL),
    Variant("meta", "meta", "bf16", "plain"),
    Variant("ours compile+cudagraphs", "ours", "fp32", "compile", cuda_graphs=True),
    Variant("ours compile", "ours", "bf16", "compile"),
    Variant("ours compile", "ours", "fp32", "compile"),
    Variant("ours tensorrt", "ours", "bf16", "tensorrt"),
    Variant("ours tensorrt", "ours", "fp32", "tensorrt"),
    Variant("meta", "meta", "fp32", "plain"),
)


def variants(smoke: bool, meta_available: bool, trt_available: bool, chosen: Optional[Sequence[str]] = None,
             model: str = "sam2.1_hiera_tiny") -> List[Variant]:
    """What to measure, most important first (the reference, when chosen, comes first); `chosen`: slugs, a
    model's name and a colon before one for that model (e.g. edgetam:ours-eager-bf16). `model`: --model; Meta's
    variants run for it alone, when Meta's sam2 has it (META_CONFIGS: not EdgeTAM)."""
    if smoke:
        picked = [REFERENCE, Variant("ours compile", "ours", "fp32", "compile")]
        picked += [Variant("meta", "meta", "fp32", "plain")] if meta_available else []
    else:
        picked = list(ALL_VARIANTS)
    if chosen:
        pool = {v.slug: v for v in ALL_VARIANTS + tuple(picked) if v.model is None}
        picked = []
        for slug in chosen:
            other, _, base = slug.rpartition(":")
            if base not in pool or (other and other not in MODEL_NAMES) or (other and pool[base].side == "meta"):
                raise SystemExit(f"unknown --variants {slug!r}; choose from {list(pool)}, ours optionally "
                                 f"prefixed with a model, e.g. {COMPARED_MODEL}:ours-eager-bf16 "
                                 f"(models: {', '.join(MODEL_NAMES)})")
            picked.append(dataclasses.replace(pool[base], model=other or None))
    unique: List[Variant] = []
    for v in picked:
        v = dataclasses.replace(v, model=None) if v.model == model else v
        if v not in unique and (v.side != "meta" or (meta_available and model in META_CONFIGS)) and (
                v.backend != "tensorrt" or trt_available):
            unique.append(v)
    return unique


def environment(device: torch.device) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    for module in ("sam2", "torch_tensorrt", "triton"):
        info[module] = importable(module)
    return info


def importable(module: str) -> Optional[str]:
    """The module's version (or "yes") when it imports, None when it does not."""
    try:
        if module == "torch_tensorrt":
            from sam2_rt.runtime.engines import import_torch_tensorrt

            imported = import_torch_tensorrt()
        else:
            imported = __import__(module)
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return None
    return str(getattr(imported, "__version__", "yes"))


# Issue 18's goals (tiny at 1024, bf16, H100 / H200): FPS per object count, and >= 1.3x Meta's vos_optimized.
FPS_GOALS = {1: 150.0, 4: 100.0, 16: 40.0}
VOS_RATIO_GOAL = 1.3


def goals(runs: List[Run]) -> Dict[str, Any]:
    """Our best bf16 FPS per object count against FPS_GOALS and against Meta's vos_optimized (same run)."""
    result: Dict[str, Any] = {}
    for count, target in FPS_GOALS.items():
        ours = [r for r in runs if r.side == "ours" and r.objects == count and r.fps and r.precision == "bf16"]
        meta = [r for r in runs if r.variant == "meta vos_optimized" and r.objects == count and r.fps]
        if not ours:
            result[f"{count}_objects"] = "not measured (no bf16 run of ours)"
            continue
        best = max(ours, key=lambda r: r.fps or 0.0)
        line: Dict[str, Any] = dict(best=f"{best.variant} {best.precision}", fps=round(best.fps or 0.0, 1),
                                    fps_target=target, fps_met=(best.fps or 0.0) >= target)
        if meta:
            ratio = (best.fps or 0.0) / (meta[0].fps or 1.0)
            line.update(vos_ratio=round(ratio, 2), vos_target=VOS_RATIO_GOAL, vos_met=ratio >= VOS_RATIO_GOAL)
        else:
            line["vos_ratio"] = "not measured (Meta's vos_optimized did not run at this count)"
        result[f"{count}_objects"] = line
    return result


# Issue 20's goal: EdgeTAM >= 2x the frames/s of SAM 2.1 tiny on the same GPU and backend.
MODEL_RATIO_GOALS = {("sam2.1_hiera_tiny", "edgetam"): 2.0}


def model_ratios(runs: List[Run], main_model: str) -> List[Dict[str, Any]]:
    """Each run of another model over the main model's run of the same variant, precision and object count:
    FPS and steady-state FPS ratios, against MODEL_RATIO_GOALS where there is one."""
    lines = []
    for run in runs:
        if run.model == main_model or not run.fps:
            continue
        base = next((r for r in runs if r.model == main_model and r.fps and (r.variant, r.precision, r.objects)
                     == (run.variant, run.precision, run.objects)), None)
        line: Dict[str, Any] = dict(model=run.model, vs=main_model, variant=run.variant, precision=run.precision,
                                    objects=run.objects, fps=round(run.fps, 1))
        if base is None:
            line["ratio"] = f"not measured ({main_model} has no ok run of this variant and count)"
        else:
            line.update(vs_fps=round(base.fps or 0.0, 1), ratio=round(run.fps / (base.fps or 1.0), 2))
            if run.steady_fps and base.steady_fps:
                line["steady_ratio"] = round(run.steady_fps / base.steady_fps, 2)
            target = MODEL_RATIO_GOALS.get((main_model, run.model))
            if target is not None:
                line.update(target=target, met=line["ratio"] >= target)
        lines.append(line)
    return lines


def table(runs: List[Run]) -> str:
    header = ("| variant | model | precision | objects | FPS | steady FPS | ms/frame | frame 0 ms | image_enc | "
              "mem_attn | decoder | mem_enc | outside ms | peak MiB | IoU mean / min | warm-up s | total s | status |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]

    def number(value: Optional[float], digits: int = 1) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for r in runs:
        parts = [number(r.component_ms.get(name), 2) for name in COMPONENT_METHODS]
        iou = "" if r.iou_mean is None else f"{r.iou_mean:.4f} / {r.iou_min:.4f}"
        warmup = r.warmup_s if r.warmup_s is not None else r.compile_s
        lines.append(f"| {r.variant} | {r.model} | {r.precision} | {r.objects} | {number(r.fps)} | "
                     f"{number(r.steady_fps)} | {number(r.ms_per_frame, 2)} | {number(r.first_frame_ms)} | " + " | ".join(parts) +
                     f" | {number(r.outside_ms, 2)} | {number(r.peak_gpu_mib, 0)} | {iou} | "
                     f"{number(warmup)} | {number(r.total_s)} | {r.status} |")
    return "\n".join(lines)


def attention_table(lines: List[Dict[str, Any]]) -> str:
    """Memory attention alone at steady state: one row per implementation, ms / TFLOP/s per object count."""
    counts = sorted({line["objects"] for line in lines})
    names = list(dict.fromkeys(line["implementation"] for line in lines))
    out = ["| memory attention | " + " | ".join(f"{n} obj ms (TFLOP/s)" for n in counts) + " |",
           "|---|" + "---|" * len(counts)]
    for name in names:
        cells = []
        for count in counts:
            line = next((x for x in lines if x["implementation"] == name and x["objects"] == count), {})
            cells.append(f"{line['ms']:.2f} ({line['tflops']})" if "ms" in line else line.get("status", ""))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true",
                        help="CI size: image 128 (256 with EdgeTAM), 4 frames, 1 / 2 objects, fp32, compile with "
                             "dynamo's eager compiler")
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=MODEL_NAMES,
                        help="the model measured (Meta's predictor too, for Meta's SAM 2 models)")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--budget-s", type=float, default=400.0,
                        help="seconds: a variant is skipped when less than it needs (MIN_SECONDS) is left")
    parser.add_argument("--compiler", default="inductor", help="torch.compile backend of the compile variants")
    parser.add_argument("--out", type=Path, default=Path("out/gpu_bench.json"))
    parser.add_argument("--cameras", type=int, nargs="+",
                        help="cameras mode: our variants tracking K streams together, for each K (e.g. 1 2 4)")
    parser.add_argument("--variants", nargs="+", metavar="SLUG",
                        help="only these, in this order: " + " ".join(v.slug for v in ALL_VARIANTS) +
                        " (ours with another model than --model: MODEL:SLUG)")
    parser.add_argument("--vos-objects", type=int, nargs="+", default=[1],
                        help="object counts of Meta's vos_optimized (its compilation is long: 1 object by default)")
    parser.add_argument("--vos-budget-s", type=float, default=150.0,
                        help="seconds Meta's vos_optimized may take, compilation included (reported apart)")
    parser.add_argument("--attention", action="store_true",
                        help="also time each memory-attention implementation alone at steady state (--objects)")
    parser.add_argument("--warm-start", action="store_true",
                        help="after the first compile variant: a second process warms up the same shapes from "
                             "our compile cache, with torch's own caches empty (a reboot); its seconds reported")
    parser.add_argument("--meta-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.meta_worker:
        meta_worker(args.meta_worker)
        return
    if args.warmup_child:
        warmup_child(args.warmup_child)
        return
    started = time.perf_counter()
    device = torch.device(args.device)
    env = environment(device)
    LOG.info("environment: %s", env)
    chosen = variants(args.smoke, bool(env["sam2"]), bool(env["torch_tensorrt"]), args.variants, args.model)
    if args.smoke:
        # EdgeTAM's image sizes are multiples of 256 (its perceiver's 16 x 16 windows of the stride-16 map)
        edgetam = COMPARED_MODEL in {args.model} | {v.model for v in chosen}
        args.image_size, args.frames, args.objects, args.compiler = 256 if edgetam else 128, 4, [1, 2], "eager"
    if args.model not in META_CONFIGS:
        LOG.info("Meta's predictor does not run: Meta's sam2 package has no %s (ours alone)", args.model)

    model = build_model(args.model, args.image_size, device)
    models = {args.model: model}
    clip = SyntheticClip(args.image_size, args.image_size, num_shapes=max(args.objects))
    frames, clicks = clip.frames(args.frames), clip.centers(0)  # a click on each shape
    if args.cameras:
        main_cameras(args, env, model, frames, clicks, device, started)
        return
    runs: List[Run] = []
    reference: Dict[str, Dict[int, List[np.ndarray]]] = {}  # per model: the masks of REFERENCE
    with tempfile.TemporaryDirectory(prefix="sam2_gpu_bench_") as tmp:
        workdir = Path(tmp)
        if env["sam2"]:
            (workdir / "frames").mkdir()
            frames = jpeg_roundtrip(frames, workdir / "frames")
            torch.save(model.state_dict(), workdir / "weights.pt")
        meta_spec = dict(device=args.device, model=args.model, image_size=args.image_size, num_frames=args.frames,
                         frames=str(workdir / "frames"),
                         weights=str(workdir / "weights.pt"), clicks=clicks.tolist())
        extra: Dict[str, Any] = {}

        def write_report() -> Dict[str, Any]:
            """The JSON so far (rewritten after every variant: a run cut short still reports)."""
            report = dict(env=env, args={k: str(v) for k, v in vars(args).items()}, runs=[asdict(r) for r in runs],
                          goals=goals([r for r in runs if r.model == args.model]),
                          model_ratios=model_ratios(runs, args.model),
                          seconds=round(time.perf_counter() - started, 1), **extra)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))
            return report

        cache_root = workdir / "sam2_rt_cache"
        for variant in chosen:
            name = variant.model or args.model
            remaining = args.budget_s - (time.perf_counter() - started)
            needed = MIN_SECONDS[variant.backend]
            counts = args.vos_objects if variant.backend == "vos" else args.objects
            if remaining < needed and not args.smoke:
                status = f"skipped: {remaining:.0f} s of the budget left, needs ~{needed:.0f}"
                new = [Run(variant.name, variant.side, variant.backend, variant.precision, n, status=status)
                       for n in counts]
                masks: Dict[int, List[np.ndarray]] = {}
            elif variant.side == "meta":
                budget = min(remaining, args.vos_budget_s) if variant.backend == "vos" else remaining
                new, masks = run_meta(variant, workdir, meta_spec, counts, budget)
            else:
                if name not in models:
                    models[name] = build_model(name, args.image_size, device)
                new, masks = run_ours(variant, models[name], frames, clicks, counts, device, args.compiler,
                                      cache_root)
                torch._dynamo.reset()
                if args.warm_start and variant.backend == "compile" and "warm_start" not in extra:
                    extra["warm_start"] = warm_start(variant, args, counts, cache_root, workdir)
                    print(json.dumps(dict(warm_start=extra["warm_start"])), flush=True)
            if dataclasses.replace(variant, model=None) == REFERENCE:
                reference[name] = masks
            for run in new:
                run.model = name
                # masks against the same model's fp32 eager masks (when that variant ran before)
                ref = reference.get(name, {})
                if run.objects in masks and run.objects in ref:
                    ious = np.concatenate([mask_ious(a, b) for a, b in zip(masks[run.objects], ref[run.objects])])
                    run.iou_mean, run.iou_min = float(ious.mean()), float(ious.min())
                print(json.dumps(asdict(run)), flush=True)
            runs.extend(new)
            write_report()
        if args.attention:
            try:
                extra["attention"] = attention_times(model, frames, clicks, args.objects, device, args.compiler)
            except Exception as err:  # noqa: BLE001 - the runs above are reported all the same
                LOG.exception("the memory-attention timings failed")
                extra["attention_error"] = f"{type(err).__name__}: {err}"[:500]
        report = write_report()
    sys.stdout.write(f"\n{args.model} at {args.image_size}, {args.frames} frames, {env['gpu'] or env['device']}, "
                     f"torch {env['torch']}, {env['date']}; {report['seconds']} s in all; JSON: {args.out}\n")
    if "warm_start" in report:
        sys.stdout.write(f"warm start from our compile cache (torch's caches empty): {json.dumps(report['warm_start'])}\n")
    if report.get("attention"):
        sys.stdout.write(attention_table(report["attention"]) + "\n")
    for line in report["model_ratios"]:
        sys.stdout.write(f"model ratio: {json.dumps(line)}\n")
    sys.stdout.write(f"goals: {json.dumps(report['goals'])}\n{table(runs)}\n")


def main_cameras(args: argparse.Namespace, env: Dict[str, Any], model: torch.nn.Module, frames: np.ndarray,
                 clicks: np.ndarray, device: torch.device, started: float) -> None:
    """The cameras mode of `main`: our variants only, JSON lines per (variant, K), the report file last."""
    lines: List[Dict[str, Any]] = []
    # one model's scaling with cameras: the variants of --model only
    for variant in variants(args.smoke, meta_available=False, trt_available=bool(env["torch_tensorrt"]),
                            model=args.model):
        if variant.model is not None:
            continue
        new = run_cameras(variant, model, frames, clicks, args.cameras, args.objects[0], device, args.compiler)
        torch._dynamo.reset()
        for line in new:
            print(json.dumps(line), flush=True)
        lines.extend(new)
    report = dict(env=env, args={k: str(v) for k, v in vars(args).items()}, cameras=lines,
                  goals=cameras_goal(lines), seconds=round(time.perf_counter() - started, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    sys.stdout.write(f"goals: {json.dumps(report['goals'])}\n")


if __name__ == "__main__":
    main()

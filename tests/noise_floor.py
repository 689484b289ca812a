"""Noise floor of the recurrent comparisons: the eager tracker against itself with 1, 2 and 3 torch threads.

    python tests/noise_floor.py                      # the fixed-shape and stream scenarios of the tests
    python tests/noise_floor.py --only tracker_parity  # the 60-frame run of test_tracker_parity.py, ours and Meta

A different thread count changes how the CPU kernels block their sums (GEMM tiles, reduction splits), so the
same stream gives results that differ in the last bits; the memory bank stores bfloat16, and where such a
difference moves a value across a bfloat16 rounding boundary the next frames carry a whole bfloat16 step.
This is the same kind of difference a compiled graph, a batch of streams or Meta's code gives against our eager
stream, so the tests' bounds are a stated multiple of this floor (see each test).

Each scenario runs the streams of its test, eager, `--repeats` times per thread count (a repeat with the same
thread count can differ too); every pair of runs is compared frame by frame. Prints one JSON line per scenario
and pair of runs (`runs`: [threads, repeat] of each), then one summary line per scenario (`worst` over its
pairs). Per pair: `worst` = max over frames of
max |logits a - logits b| / max(1, max |logits b|) (the measure the tests bound), `per_frame` the same per
frame, `ids_equal` whether object ids matched on every frame, `mask_flips` the worst fraction of mask pixels
that differ (pixels whose logit is at the threshold within the noise), `presence_abs` / `ious_abs` the largest
absolute difference of the object presence probabilities and predicted IoUs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository root, for testkit and bench
    sys.path.insert(0, str(REPO))

# One stream's results per frame, flattened: a list of TrackResult-like objects with .object_ids/.logits/.masks.
Run = Callable[[], List]


def _flat(results: List) -> List:
    """Results of a run as one list (two-stream runs give a pair per frame)."""
    return [r for item in results for r in (item if isinstance(item, (list, tuple)) else [item])]


def compare(a: List, b: List) -> Dict[str, object]:
    per_frame, ids_equal, flips, scores = [], True, 0.0, {"presence": 0.0, "ious": 0.0}
    for got, want in zip(_flat(a), _flat(b)):
        ids_equal &= got.object_ids == want.object_ids
        if not want.object_ids or got.logits.shape != want.logits.shape:
            per_frame.append(0.0)
            continue
        scale = max(1.0, want.logits.abs().max().item())
        per_frame.append((got.logits - want.logits).abs().max().item() / scale)
        flips = max(flips, (got.masks != want.masks).float().mean().item())
        for name in scores:
            if hasattr(want, name):
                scores[name] = max(scores[name], (getattr(got, name) - getattr(want, name)).abs().max().item())
    return {"worst": max(per_frame), "per_frame": [float(f"{v:.3g}") for v in per_frame], "ids_equal": ids_equal,
            "mask_flips": flips, **{f"{name}_abs": value for name, value in scores.items()}}


def scenarios(only: Sequence[str]) -> Dict[str, Run]:
    """The runs of each scenario whose name starts with one of `only` (every scenario but the parity run's if
    `only` is empty), built lazily: the parity run builds Meta's model."""
    from testkit.oracle import present_objects_model
    from sam2_rt import Tracker, TrackerConfig

    import test_fixed_shapes as fixed
    import test_tracker_streams as streams

    def wanted(name: str) -> bool:
        return any(name.startswith(prefix) for prefix in only) if only else not name.startswith("tracker_parity")

    runs: Dict[str, Run] = {}
    if wanted("fixed_shapes"):
        fixed_model = present_objects_model(fixed.IMAGE_SIZE)
        runs["fixed_shapes.one_stream"] = lambda: fixed.run(Tracker(fixed_model, TrackerConfig(max_objects=5)),
                                                            fixed.COMPARED_FRAMES)
        runs["fixed_shapes.two_streams"] = lambda: fixed.run_two_streams(
            Tracker(fixed_model, TrackerConfig(max_objects=5)), fixed.COMPARED_FRAMES)
    if wanted("tracker_streams"):
        streams_model = present_objects_model(streams.IMAGE_SIZE)
        runs["tracker_streams.alone"] = lambda: streams.run_alone(Tracker(streams_model, TrackerConfig(max_objects=4)))
        runs["tracker_streams.alone_across_frames"] = lambda: streams.run_alone(Tracker(streams_model, TrackerConfig(
            max_objects=4, memory_attention_batch=8, compact_memory=False)))
    if wanted("tracker_parity"):
        import test_tracker_parity as parity_test
        from bench.track import meta_stream, ours_stream
        from sam2_rt.io.synthetic import SyntheticClip
        from sam2_rt.tracking.transforms import preprocess

        meta, ours = parity_test.build_models()
        clip = SyntheticClip(*parity_test.FRAME_SIZE, seed=1)
        frames = list(clip.frames(parity_test.NUM_FRAMES))
        schedule = parity_test.scenario_schedule(clip)

        def ours_run() -> List:
            tracker = Tracker(ours, TrackerConfig())
            return [result for _, result, _, _ in ours_stream(tracker, frames, schedule)]

        def meta_run() -> List:
            with torch.inference_mode():
                images = torch.cat([preprocess(f, parity_test.IMAGE_SIZE, torch.device("cpu")) for f in frames])
            return [_MetaResult(frame) for frame in meta_stream(meta, images, parity_test.FRAME_SIZE, schedule)]

        runs["tracker_parity.ours"] = ours_run
        runs["tracker_parity.meta"] = meta_run
    return runs


def comparisons(only: Sequence[str]) -> Dict[str, Tuple[Run, Run]]:
    """What the tests compare (got, want), to set beside the floor: run at each thread count, compared."""
    from testkit.oracle import present_objects_model
    from sam2_rt import Tracker, TrackerConfig

    import test_fixed_shapes as fixed
    import test_tracker_streams as streams

    pairs: Dict[str, Tuple[Run, Run]] = {}
    if not only or any("fixed_shapes".startswith(prefix) or prefix.startswith("fixed_shapes") for prefix in only):
        model = present_objects_model(fixed.IMAGE_SIZE)

        def compiled() -> List:
            tracker = Tracker(model, TrackerConfig(max_objects=5, backend="compile", compiler="aot_eager"))
            tracker.warmup()
            return fixed.run(tracker, fixed.COMPARED_FRAMES)

        pairs["fixed_shapes.compiled_vs_eager"] = (
            compiled, lambda: fixed.run(Tracker(model, TrackerConfig(max_objects=5)), fixed.COMPARED_FRAMES))
    if not only or any("tracker_streams".startswith(prefix) or prefix.startswith("tracker_streams") for prefix in only):
        model = present_objects_model(streams.IMAGE_SIZE)
        pairs["tracker_streams.together_vs_alone"] = (
            lambda: streams.run_together(Tracker(model, TrackerConfig(max_objects=4))),
            lambda: streams.run_alone(Tracker(model, TrackerConfig(max_objects=4))))
    return pairs


class _MetaResult:
    """Meta's frame output in the shape `compare` reads."""

    def __init__(self, frame) -> None:
        self.object_ids = list(frame.object_ids)
        self.logits = frame.logits
        self.masks = frame.logits > 0
        self.presence = torch.sigmoid(frame.object_scores)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=2, help="runs per thread count")
    parser.add_argument("--comparisons", action="store_true",
                        help="also what the tests compare (compiled vs eager, together vs alone) per thread count")
    parser.add_argument("--only", nargs="*", default=[], help="scenario name prefixes (default: all but parity)")
    options = parser.parse_args(argv or None)
    default_threads = torch.get_num_threads()
    machine = {"cpu": _cpu_model(), "cores": os.cpu_count(),
               "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
    print(json.dumps({"machine": machine, "default_threads": default_threads}), flush=True)
    for name, run in scenarios(options.only).items():
        outputs = {}
        for repeat in range(options.repeats):
            for threads in options.threads:
                torch.set_num_threads(threads)
                outputs[(threads, repeat)] = run()
        torch.set_num_threads(default_threads)
        pairs = []
        for a, b in itertools.combinations(sorted(outputs), 2):
            pairs.append({"scenario": name, "runs": [a, b], **compare(outputs[a], outputs[b])})
            print(json.dumps(pairs[-1]), flush=True)
        summary = {key: max(pair[key] for pair in pairs) for key in ("worst", "mask_flips", "presence_abs", "ious_abs")}
        same_threads = [pair["worst"] for pair in pairs if pair["runs"][0][0] == pair["runs"][1][0]]
        print(json.dumps({"scenario": name, "summary": summary, "worst_same_threads": max(same_threads, default=None),
                          "ids_equal": all(pair["ids_equal"] for pair in pairs)}), flush=True)
    if options.comparisons:
        for name, (got, want) in comparisons(options.only).items():
            for threads in options.threads:
                torch.set_num_threads(threads)
                result = compare(got(), want())
                print(json.dumps({"comparison": name, "threads": threads, **result}), flush=True)
            torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main(sys.argv[1:])

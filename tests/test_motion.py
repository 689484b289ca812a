"""SAMURAI's motion model (sam2_rt.tracking.motion): the batched Kalman filter equals the reference's numpy one
(absolutely-not-samurai==1.0.0, its utils/kalman_filter.py loaded alone: it needs numpy and scipy only), and the
candidate choice follows SAMURAI's three phases per object."""

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from sam2_rt.tracking.memory import EMPTY, MemoryBank
from sam2_rt.tracking.motion import (
    MotionState,
    SamuraiConfig,
    box_iou,
    initiate,
    mask_boxes,
    memory_worthy,
    predict,
    update,
    xyah_to_xyxy,
    xyxy_to_xyah,
)

REPO = Path(__file__).resolve().parents[1]
REFERENCE_KF = REPO / "build" / "refs" / "samurai" / "sam2" / "utils" / "kalman_filter.py"


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    assert REFERENCE_KF.is_file(), f"{REFERENCE_KF} missing: `make setup` unpacks absolutely-not-samurai there"
    spec = importlib.util.spec_from_file_location("samurai_kalman_filter", REFERENCE_KF)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    x0, y0 = rng.uniform(0, 500, count), rng.uniform(0, 500, count)
    return np.stack([x0, y0, x0 + rng.uniform(1, 300, count), y0 + rng.uniform(1, 300, count)], axis=1).round()


def test_the_filter_equals_the_reference_over_a_track(reference: ModuleType) -> None:
    kf = reference.KalmanFilter()
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 3)
    means, covs = [], []
    for box in boxes:
        mean, cov = kf.initiate(np.array(kf.xyxy_to_xyah(list(box))))
        means.append(mean)
        covs.append(cov)
    mean_t, cov_t = initiate(xyxy_to_xyah(torch.tensor(boxes)))
    for step in range(30):
        measured = boxes + rng.normal(0, 4, boxes.shape) + step * np.array([3.0, 1.0, 3.0, 1.0])
        mean_t, cov_t = predict(mean_t, cov_t)
        mean_t, cov_t = update(mean_t, cov_t, xyxy_to_xyah(torch.tensor(measured)))
        for k in range(len(boxes)):
            means[k], covs[k] = kf.predict(means[k], covs[k])
            means[k], covs[k] = kf.update(means[k], covs[k], np.array(kf.xyxy_to_xyah(list(measured[k]))))
    np.testing.assert_allclose(mean_t.numpy(), np.stack(means), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(cov_t.numpy(), np.stack(covs), rtol=1e-10, atol=1e-9)


def test_box_conversions_and_iou_equal_the_reference(reference: ModuleType) -> None:
    kf = reference.KalmanFilter()
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 8)
    boxes[0] = [10, 20, 30, 20]  # zero height: counts as 1
    np.testing.assert_allclose(xyxy_to_xyah(torch.tensor(boxes)).numpy(), [kf.xyxy_to_xyah(list(b)) for b in boxes])
    xyah = np.array([kf.xyxy_to_xyah(list(b)) for b in boxes])
    np.testing.assert_allclose(xyah_to_xyxy(torch.tensor(xyah)).numpy(), [kf.xyah_to_xyxy(list(b)) for b in xyah])
    candidates = np.concatenate([random_boxes(rng, 3 * 8).reshape(8, 3, 4)], axis=0)
    candidates[2, 1] = 0  # an empty mask's box
    candidates[3, 0] = boxes[3]  # the same box
    got = box_iou(torch.tensor(xyah_to_xyxy(torch.tensor(xyah)).numpy()), torch.tensor(candidates)).numpy()
    want = [kf.compute_iou(list(xyah[k]), [list(c) for c in candidates[k]]) for k in range(8)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert got[2, 1] == 0 and got[3, 0] == pytest.approx(1.0)


def test_mask_boxes_are_the_first_and_last_pixel_and_zero_for_an_empty_mask() -> None:
    logits = torch.full((2, 3, 16, 20), -5.0)
    logits[0, 0, 3:7, 4:9] = 1.0
    logits[0, 1, 15, 19] = 0.5
    logits[1, 2, 0:16, 2] = 2.0
    logits[1, 1, 5, 5] = 0.0  # not above 0
    boxes = mask_boxes(logits)
    assert boxes.dtype == torch.float64 and boxes.shape == (2, 3, 4)
    assert boxes[0, 0].tolist() == [4, 3, 8, 6] and boxes[0, 1].tolist() == [19, 15, 19, 15]
    assert boxes[1, 2].tolist() == [2, 0, 2, 15]
    assert boxes[0, 2].tolist() == boxes[1, 0].tolist() == boxes[1, 1].tolist() == [0, 0, 0, 0]


def candidates_at(boxes: list, size: int = 64) -> torch.Tensor:
    """(1, C, size, size) logits: candidate c fills boxes[c] (x0, y0, x1, y1 inclusive), or nothing for None."""
    logits = torch.full((1, len(boxes), size, size), -1.0)
    for c, box in enumerate(boxes):
        if box is not None:
            x0, y0, x1, y1 = box
            logits[0, c, y0:y1 + 1, x0:x1 + 1] = 1.0
    return logits


def test_the_filter_learns_then_scores_candidates_by_motion_and_resets_on_a_poor_mask() -> None:
    config = SamuraiConfig(stable_frames_threshold=3, stable_ious_threshold=0.3, kf_score_weight=0.5)
    state = MotionState(capacity=2, device=torch.device("cpu"))
    square = lambda x: (x, 20, x + 9, 29)  # noqa: E731  a 10 x 10 square moving right by 2 px a frame

    def step(x: int, ious: list, decoy: tuple) -> "object":
        # candidate 0 follows the square, candidate 1 is a decoy far away
        choice = state.choose([1], torch.tensor([ious]), candidates_at([square(x), decoy]), config)
        state.apply([1], choice)
        return choice

    first = step(0, [0.9, 0.2], (40, 40, 49, 49))  # no filter: the highest predicted IoU, the filter starts
    assert first.best.tolist() == [0] and state.stable[1] == 1 and math.isnan(first.motion_score[0])
    assert state.mean[1, :4].tolist() == [4.5, 24.5, 1.0, 9.0]  # on the square's box (x0 0, y0 20, x1 9, y1 29)
    for frame, x in enumerate((2, 4), start=2):  # learning: highest IoU, updated while above the threshold
        choice = step(x, [0.9, 0.5], (40, 40, 49, 49))
        assert choice.best.tolist() == [0] and state.stable[1] == frame
    stable = step(6, [0.6, 0.8], (50, 50, 59, 59))  # stable: motion outweighs a higher predicted IoU
    assert stable.best.tolist() == [0] and stable.motion_score[0] > 0 and state.stable[1] == 3
    poor = step(8, [0.1, 0.05], (50, 50, 59, 59))  # the chosen mask's IoU below the threshold: reset
    assert state.stable[1] == 0 and poor.best.tolist() == [0]
    assert state.stable[0] == 0, "another row's filter is untouched"
    def worthy(choice: "object", score: float, config: SamuraiConfig = SamuraiConfig()) -> list:
        return memory_worthy(choice.best_iou, torch.tensor([[score]]), choice.motion_score, config).tolist()

    assert worthy(stable, 1.0) == [True] and worthy(stable, -1.0) == [False] and worthy(poor, 1.0) == [False]
    assert worthy(stable, 1.0, SamuraiConfig(memory_bank_kf_score_threshold=0.99)) == [False]
    assert worthy(first, 1.0, SamuraiConfig(memory_bank_kf_score_threshold=0.99)) == [True], "no motion score"


def test_objects_are_independent_and_rows_compact_on_removal() -> None:
    config = SamuraiConfig(stable_frames_threshold=2)
    together = MotionState(capacity=3, device=torch.device("cpu"))
    alone = [MotionState(capacity=1, device=torch.device("cpu")) for _ in range(3)]
    rng = torch.Generator().manual_seed(0)
    for frame in range(6):
        ious = torch.rand(3, 3, generator=rng)
        logits = torch.randn(3, 3, 32, 32, generator=rng)
        both = together.choose([0, 1, 2], ious, logits, config)
        together.apply([0, 1, 2], both)
        for k in range(3):
            one = alone[k].choose([0], ious[k:k + 1], logits[k:k + 1], config)
            alone[k].apply([0], one)
            assert one.best.tolist() == both.best[k:k + 1].tolist()
    for k in range(3):
        assert torch.equal(together.mean[k], alone[k].mean[0]) and torch.equal(together.stable[k], alone[k].stable[0])
    together.keep_rows([0, 2], 3)
    assert torch.equal(together.mean[1], alone[2].mean[0]) and together.stable[2] == 0



def selective_bank(capacity: int = 2, recent: int = 3) -> MemoryBank:

    return MemoryBank(capacity=capacity, num_conditioning=2, num_recent=recent, num_recent_ptrs=4,
                      slot_shape=(2, 2, 2), hidden_dim=4, device=torch.device("cpu"), storage_dtype=torch.float32,
                      selective=True)


def write(bank: MemoryBank, frame: int, accepted: list) -> None:
    rows = list(range(len(accepted)))
    feats = torch.full((len(rows), 2, 2, 2), float(frame))
    bank.write_recent(rows, frame, feats, torch.full((len(rows), 4), float(frame)), accepted=accepted)


def test_a_selective_bank_keeps_the_last_accepted_frames_and_the_last_frame_newest_first() -> None:
    bank = selective_bank()
    bank.write_conditioning([0, 1], 0, torch.zeros(2, 2, 2, 2), torch.zeros(2, 4))
    # row 0 accepts frames 2, 3, 5; row 1 accepts only frame 4. Frame 1 (too early) accepted by neither.
    for frame, accepted in ((1, [False, False]), (2, [True, False]), (3, [True, False]), (4, [False, True]),
                            (5, [True, False]), (6, [False, False])):
        write(bank, frame, accepted)
    readout = bank.read([0, 1], frame_index=7, num_maskmem=4, dtype=torch.float32, compact=False)
    # spatial slots: 2 conditioning, then the 3 ring slots; their frames are the features' values
    frames = readout.mem_feats[:, 2:, 0, 0, 0]
    valid, tpos = readout.mem_valid[:, 2:], readout.mem_tpos_index[:, 2:]
    row0 = sorted(zip(frames[0][valid[0]].tolist(), tpos[0][valid[0]].tolist()))
    row1 = sorted(zip(frames[1][valid[1]].tolist(), tpos[1][valid[1]].tolist()))
    assert row0 == [(3.0, 2), (5.0, 1), (6.0, 0)], "the 2 newest accepted (3, 5), then the last frame (6)"
    assert row1 == [(4.0, 1), (6.0, 0)], "its one accepted frame and the last frame, ranked newest first"
    # pointers are the last Q frames as usual
    assert sorted(readout.ptr_tpos[0][readout.ptr_valid[0]].tolist()) == [1.0, 2.0, 3.0, 4.0, 7.0]
    # the memory is bounded: the ring never grows
    for frame in range(8, 200):
        write(bank, frame, [frame % 3 == 0, False])
    assert bank.recent_frames.shape == (2, 3) and sorted(bank.recent_frames[0].tolist()) == [195, 198, 199]
    assert sorted(bank.recent_frames[1].tolist()) == [EMPTY, 4, 199]


def test_a_selective_bank_with_every_frame_accepted_reads_what_the_plain_bank_reads() -> None:

    plain = MemoryBank(capacity=1, num_conditioning=1, num_recent=3, num_recent_ptrs=4, slot_shape=(2, 2, 2),
                       hidden_dim=4, device=torch.device("cpu"), storage_dtype=torch.float32)
    chosen = selective_bank(capacity=1)
    for bank in (plain, chosen):
        bank.write_conditioning([0], 0, torch.zeros(1, 2, 2, 2), torch.zeros(1, 4))
    for frame in range(1, 12):
        write(chosen, frame, [True])
        plain.write_recent([0], frame, torch.full((1, 2, 2, 2), float(frame)), torch.full((1, 4), float(frame)))
        a = plain.read([0], frame + 1, num_maskmem=4, dtype=torch.float32, compact=True)
        b = chosen.read([0], frame + 1, num_maskmem=4, dtype=torch.float32, compact=True)
        key = lambda r: sorted(zip(r.mem_feats[0, :, 0, 0, 0].tolist(), r.mem_tpos_index[0].tolist()))  # noqa: E731
        assert key(a) == key(b) and a.complete == b.complete
        assert plain.steady_conditioning([0], frame + 1) == chosen.steady_conditioning([0], frame + 1)

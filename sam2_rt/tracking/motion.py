"""Motion-aware candidate choice (SAMURAI, arXiv 2411.11922): a constant-velocity Kalman filter on each object's
box scores the mask decoder's candidates by motion, and tells which tracked frames may enter the memory.

SAMURAI's reference tracks one object with one filter held by the model. Here every object of a stream has its
own filter, in fixed-size tensors of the stream (`MotionState`, rows like the memory bank's), and one step
updates the filters of all its objects at once: no Python loop over objects, no host synchronisation.

Per object and decoded frame with candidates (the decoder's multimask output), as the reference does:
  - no stable frames yet (a new object, or the filter was reset): take the candidate of highest predicted IoU
    and start the filter on its box; stable frames = 1;
  - fewer than `stable_frames_threshold` stable frames: predict; take the highest predicted IoU; if that IoU
    is above `stable_ious_threshold`, update the filter with its box and count one more stable frame, else
    reset (stable frames = 0);
  - stable: predict; score every candidate by `kf_score_weight * IoU(predicted box, candidate box) +
    (1 - kf_score_weight) * predicted IoU` and take the best; its predicted IoU below `stable_ious_threshold`
    resets the filter, else its box updates it. The box IoU of the chosen candidate is its motion score.
Boxes are the candidates' masks at the model's input resolution (S x S, logits > 0): (x0, y0, x1, y1) of the
first and last pixel, all zeros for an empty mask (whose box IoU is 0). The filter's state is (centre x, centre
y, aspect w / h, height h) and their velocities; noise grows with the height, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from sam2_rt.runtime.transfer import to_device

if TYPE_CHECKING:
    from sam2_rt.modeling.sam2 import DecodeOutput, SAM2Model

# TrackerConfig.motion: SAM 2's own choice, or SAMURAI's.
MOTION_NAMES = ("none", "samurai")

# Noise weights of the filter, relative to the box height (the reference's, from DeepSORT).
STD_WEIGHT_POSITION = 1.0 / 20
STD_WEIGHT_VELOCITY = 1.0 / 160


@dataclass(frozen=True)
class SamuraiConfig:
    """SAMURAI's parameters (defaults: its configs/samurai/*.yaml, the same for every model size).

    Attributes:
      stable_frames_threshold: decoded frames the filter must follow before it scores candidates.
      stable_ious_threshold: a chosen candidate's predicted IoU at or below this (below, once stable) resets the
        filter instead of updating it.
      kf_score_weight: weight of the motion score against the predicted IoU when the filter is stable.
      memory_bank_iou_threshold: a tracked frame enters an object's memory only with a predicted IoU above this ...
      memory_bank_obj_score_threshold: ... and an object score logit above this ...
      memory_bank_kf_score_threshold: ... and, when not None, a motion score above this (frames without one
        pass). None: not checked, which is what the reference does (it looks the score up under a key it never
        writes, so its threshold never applies).
    """

    stable_frames_threshold: int = 15
    stable_ious_threshold: float = 0.3
    kf_score_weight: float = 0.25
    memory_bank_iou_threshold: float = 0.5
    memory_bank_obj_score_threshold: float = 0.0
    memory_bank_kf_score_threshold: Optional[float] = None

    def __post_init__(self) -> None:
        if self.stable_frames_threshold < 1:
            raise ValueError(f"stable_frames_threshold must be >= 1, got {self.stable_frames_threshold}")
        if not 0.0 <= self.kf_score_weight <= 1.0:
            raise ValueError(f"kf_score_weight must lie in [0, 1], got {self.kf_score_weight}")


# ---------------------------------------------------------------------- boxes


def xyxy_to_xyah(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes -> (centre x, centre y, width / height, height); a height of 0 counts as 1."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    height = y1 - y0
    height = torch.where(height == 0, torch.ones_like(height), height)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / height, height), dim=-1)


def xyah_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) (centre x, centre y, width / height, height) -> corner boxes."""
    cx, cy, aspect, height = boxes.unbind(-1)
    half_w, half_h = aspect * height / 2, height / 2
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def box_iou(box: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """IoU (N, C) of boxes (N, 4) with candidates (N, C, 4), corner boxes without the +1 of pixel counts;
    0 for an all-zero candidate (an empty mask) and where the union is 0."""
    a = box[:, None, :]
    inter_w = (torch.minimum(a[..., 2], candidates[..., 2]) - torch.maximum(a[..., 0], candidates[..., 0])).clamp(min=0)
    inter_h = (torch.minimum(a[..., 3], candidates[..., 3]) - torch.maximum(a[..., 1], candidates[..., 1])).clamp(min=0)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_c = (candidates[..., 2] - candidates[..., 0]) * (candidates[..., 3] - candidates[..., 1])
    union = area_a + area_c - inter
    safe_union = torch.where(union != 0, union, torch.ones_like(union))
    iou = torch.where(union != 0, inter / safe_union, torch.zeros_like(inter))
    return torch.where((candidates == 0).all(dim=-1), torch.zeros_like(iou), iou)


def mask_boxes(logits: torch.Tensor) -> torch.Tensor:
    """(..., H, W) mask logits -> (..., 4) float64 (x0, y0, x1, y1) of the first and last pixel with a logit
    above 0 (inclusive), all zeros for an empty mask."""
    inside = logits > 0
    rows, cols = inside.any(dim=-1), inside.any(dim=-2)  # (..., H), (..., W)

    def first_last(line: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        size = line.shape[-1]
        index = torch.arange(size, device=line.device)
        first = torch.where(line, index, size).amin(dim=-1)
        last = torch.where(line, index, -1).amax(dim=-1)
        return first, last

    (y0, y1), (x0, x1) = first_last(rows), first_last(cols)
    boxes = torch.stack((x0, y0, x1, y1), dim=-1).to(torch.float64)
    return torch.where(rows.any(dim=-1, keepdim=True), boxes, torch.zeros_like(boxes))


# ---------------------------------------------------------------------- the filter (batched, float64)


def _diag(std: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.diag_embed(torch.stack(list(std), dim=-1).square())


def initiate(measurement: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A filter per (N, 4) xyah measurement: mean (N, 8) with zero velocities, covariance (N, 8, 8)."""
    h = measurement[:, 3]
    pos, vel = 2 * STD_WEIGHT_POSITION * h, 10 * STD_WEIGHT_VELOCITY * h
    small = torch.full_like(h, 1e-2)
    covariance = _diag((pos, pos, small, pos, vel, vel, torch.full_like(h, 1e-5), vel))
    return torch.cat((measurement, torch.zeros_like(measurement)), dim=1), covariance


def _motion_matrix(like: torch.Tensor) -> torch.Tensor:
    matrix = torch.eye(8, dtype=like.dtype, device=like.device)
    matrix[:4, 4:] = torch.eye(4, dtype=like.dtype, device=like.device)  # constant velocity, dt = 1
    return matrix


def predict(mean: torch.Tensor, covariance: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One frame ahead: mean (N, 8), covariance (N, 8, 8)."""
    h = mean[:, 3]
    pos, vel = STD_WEIGHT_POSITION * h, STD_WEIGHT_VELOCITY * h
    noise = _diag((pos, pos, torch.full_like(h, 1e-2), pos, vel, vel, torch.full_like(h, 1e-5), vel))
    motion = _motion_matrix(mean)
    return mean @ motion.T, motion @ covariance @ motion.T + noise


def update(mean: torch.Tensor, covariance: torch.Tensor, measurement: torch.Tensor
           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Correct predicted filters (mean (N, 8), covariance (N, 8, 8)) with xyah measurements (N, 4)."""
    h = mean[:, 3]
    pos = STD_WEIGHT_POSITION * h
    projected_cov = covariance[:, :4, :4] + _diag((pos, pos, torch.full_like(h, 1e-1), pos))
    cross = covariance[:, :, :4]  # covariance @ H.T with H = [I 0]
    factor = torch.linalg.cholesky(projected_cov)
    gain = torch.cholesky_solve(cross.transpose(1, 2), factor).transpose(1, 2)  # (N, 8, 4)
    innovation = measurement - mean[:, :4]
    new_mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
    return new_mean, covariance - gain @ projected_cov @ gain.transpose(1, 2)


# ---------------------------------------------------------------------- per-stream state and the choice


class MotionChoice(NamedTuple):
    """What the filters of N objects decided on one frame (nothing written yet: see `MotionState.apply`).

    best: (N,) int64 chosen candidate; best_iou: (N,) its predicted IoU; motion_score: (N,) float32 its box
    IoU with the predicted box, NaN where the filter was not stable; mean, covariance, stable: the filters'
    new state.
    """

    best: torch.Tensor
    best_iou: torch.Tensor
    motion_score: torch.Tensor
    mean: torch.Tensor
    covariance: torch.Tensor
    stable: torch.Tensor


class MotionState:
    """The Kalman filters of up to `capacity` objects of one stream (rows in the order of the memory bank's).

    A row's filter starts with its object's first decoded frame with candidates; `stable` counts the frames
    it followed (0: no filter yet, or reset).
    """

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.mean = torch.zeros(capacity, 8, dtype=torch.float64, device=device)
        self.covariance = torch.eye(8, dtype=torch.float64, device=device).repeat(capacity, 1, 1)
        self.stable = torch.zeros(capacity, dtype=torch.int64, device=device)

    def tensors(self) -> Tuple[torch.Tensor, ...]:
        return self.mean, self.covariance, self.stable

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def clear(self) -> None:
        self.stable.zero_()

    def keep_rows(self, keep: Sequence[int], count: int) -> None:
        """Compact after a removal: rows `keep` (ascending, of the first `count`) move to 0..len(keep)-1."""
        index = torch.tensor(list(keep), dtype=torch.int64, device=self.stable.device)
        for tensor in self.tensors():
            tensor[: len(keep)] = tensor.index_select(0, index)
            tensor[len(keep):count] = 0
        self.covariance[len(keep):count] = torch.eye(8, dtype=torch.float64, device=self.stable.device)

    def reset_rows(self, rows: Sequence[int]) -> None:
        """New objects in `rows` start without a filter."""
        if rows:
            self.stable[list(rows)] = 0

    def choose(self, rows: Sequence[int], ious: torch.Tensor, candidate_logits: torch.Tensor,
               config: SamuraiConfig) -> MotionChoice:
        """The candidate each object of `rows` takes and its filter's new state.

        Arguments:
          rows: the objects' rows in this stream.
          ious: (N, C) predicted IoU of each candidate.
          candidate_logits: (N, C, S, S) the candidates' mask logits at the model's input resolution (an absent
            object's all at NO_OBJ_SCORE, hence empty).
        """
        index = to_device(rows, self.stable.device)
        mean, covariance, stable = (t.index_select(0, index) for t in self.tensors())
        ious = ious.float()
        boxes = mask_boxes(candidate_logits)  # (N, C, 4) float64
        fresh = stable == 0
        steady = stable >= config.stable_frames_threshold
        plain_best = ious.argmax(dim=1)
        started_mean, started_cov = initiate(xyxy_to_xyah(_pick(boxes, plain_best)))
        # Rows without a filter get the one they will start with: the values below stay finite (and are dropped).
        mean = torch.where(fresh[:, None], started_mean, mean)
        covariance = torch.where(fresh[:, None, None], started_cov, covariance)
        predicted_mean, predicted_cov = predict(mean, covariance)
        motion = box_iou(xyah_to_xyxy(predicted_mean[:, :4]), boxes).float()
        weighted = config.kf_score_weight * motion + (1 - config.kf_score_weight) * ious
        best = torch.where(steady, weighted.argmax(dim=1), plain_best)
        best_iou = ious.gather(1, best[:, None])[:, 0]
        updated_mean, updated_cov = update(predicted_mean, predicted_cov, xyxy_to_xyah(_pick(boxes, best)))
        # learning: update when above the threshold; stable: reset only below it (as the reference).
        keeps = torch.where(steady, best_iou >= config.stable_ious_threshold, best_iou > config.stable_ious_threshold)
        new_mean = torch.where(fresh[:, None], started_mean,
                               torch.where(keeps[:, None], updated_mean, predicted_mean))
        new_cov = torch.where(fresh[:, None, None], started_cov,
                              torch.where(keeps[:, None, None], updated_cov, predicted_cov))
        new_stable = torch.where(fresh, torch.ones_like(stable),
                                 torch.where(keeps, torch.where(steady, stable, stable + 1), torch.zeros_like(stable)))
        motion_score = torch.where(steady, motion.gather(1, best[:, None])[:, 0],
                                   torch.full_like(best_iou, float("nan")))
        return MotionChoice(best, best_iou, motion_score, new_mean, new_cov, new_stable)

    def apply(self, rows: Sequence[int], choice: MotionChoice) -> None:
        """Write a step's choice (once every model call of the step went through)."""
        index = to_device(rows, self.stable.device)
        for tensor, values in zip(self.tensors(), (choice.mean, choice.covariance, choice.stable)):
            tensor.index_copy_(0, index, values)


def memory_worthy(best_iou: torch.Tensor, object_score_logits: torch.Tensor, motion_score: torch.Tensor,
                  config: SamuraiConfig) -> torch.Tensor:
    """(N,) bool: whether each object's tracked frame may enter its memory (SAMURAI's memory selection), from
    its chosen candidate's predicted IoU, its object score logit and its motion score (NaN: none)."""
    ok = (best_iou.float() > config.memory_bank_iou_threshold) & \
        (object_score_logits.reshape(-1).float() > config.memory_bank_obj_score_threshold)
    if config.memory_bank_kf_score_threshold is not None:
        ok &= torch.isnan(motion_score) | (motion_score > config.memory_bank_kf_score_threshold)
    return ok


def _pick(boxes: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """(N, 4) the chosen candidate's box of (N, C, 4)."""
    return boxes.gather(1, best[:, None, None].expand(-1, 1, 4))[:, 0]


class MotionGroup(NamedTuple):
    """Objects of one stream in a decoder batch: their filters, their rows in the stream, their places in the batch."""

    state: MotionState
    rows: List[int]
    positions: List[int]


def decode_with_motion(model: "SAM2Model", groups: Sequence[MotionGroup], features: torch.Tensor,
                       feat_s0: torch.Tensor, feat_s1: torch.Tensor, point_coords: Optional[torch.Tensor],
                       point_labels: Optional[torch.Tensor], mask_logits: Optional[torch.Tensor], multimask: bool,
                       config: SamuraiConfig) -> Tuple["DecodeOutput", List[MotionChoice]]:
    """Decode B objects (arguments of `SAM2Model.decode`, feat_s0 / feat_s1 batch 1 or B) taking the candidate
    each object's filter chooses; the output's `ious` is then the chosen candidate's (B, 1). Without multimask
    output there is nothing to choose (no filter runs, as in the reference). Returns the output and each
    group's choice (not yet applied to its filters)."""
    batch = features.shape[0]
    candidates = model.decode_candidates(features, feat_s0.expand(batch, *feat_s0.shape[1:]),
                                         feat_s1.expand(batch, *feat_s1.shape[1:]), point_coords, point_labels,
                                         mask_logits, multimask)
    if not multimask:
        return model.choose_candidate(candidates, None), []
    size = model.config.image_size
    # The candidates at the model's input resolution, whose boxes the filters measure (as the reference).
    high_res = F.interpolate(candidates.multimasks.float(), size=(size, size), mode="bilinear", align_corners=False)
    best = torch.zeros(batch, dtype=torch.int64, device=features.device)
    best_iou = torch.zeros(batch, dtype=torch.float32, device=features.device)
    choices = []
    for group in groups:
        where = to_device(group.positions, features.device)
        choice = group.state.choose(group.rows, candidates.ious.index_select(0, where),
                                    high_res.index_select(0, where), config)
        best.index_copy_(0, where, choice.best)
        best_iou.index_copy_(0, where, choice.best_iou)
        choices.append(choice)
    return model.choose_candidate(candidates, best)._replace(ious=best_iou[:, None]), choices


def memory_flags(first_frames: Sequence[int], frame_index: int, best_iou: torch.Tensor,
                 object_score_logits: torch.Tensor, motion_score: torch.Tensor, config: SamuraiConfig) -> List[bool]:
    """Whether each tracked object's memory of frame `frame_index` is accepted into its ring: it passes
    `memory_worthy` and lies at least two frames after the object's first prompted frame (the reference
    considers frames from index 2 of a video prompted on frame 0). Reads the scores on the host."""
    worthy = memory_worthy(best_iou, object_score_logits, motion_score, config).tolist()
    return [ok and first >= 0 and frame_index >= first + 2 for ok, first in zip(worthy, first_frames)]

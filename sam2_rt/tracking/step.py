"""The parts of one tracker step: a stream's rows among all streams' (`StreamStep`), what the model computed
for them before anything of a stream changes (`StepOutputs`, `NewMemory`), and the row bookkeeping of batched
model calls. Internal to `sam2_rt.tracking`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from sam2_rt.modeling.sam2 import DecodeOutput, SAM2Model
from sam2_rt.runtime.readout import MemoryReadout
from sam2_rt.runtime.transfer import to_device
from sam2_rt.tracking.motion import MotionChoice, MotionGroup, SamuraiConfig, decode_with_motion, memory_flags
from sam2_rt.tracking.state import PreparedPrompt, StreamState, TrackResult
from sam2_rt.tracking.transforms import Frame, boxes_from_masks, upsample_logits


class StepOutputs(NamedTuple):
    """Per-object model outputs of one frame, in row order (N objects)."""

    low_res_masks: torch.Tensor  # (N, 1, S/4, S/4) float32 logits
    high_res_masks: torch.Tensor  # (N, 1, S, S) float32 logits fed to the memory encoder
    ious: torch.Tensor  # (N,) float32
    obj_ptr: torch.Tensor  # (N, hidden_dim)
    object_score_logits: torch.Tensor  # (N, 1)


class NewMemory(NamedTuple):
    """One stream's memory of a frame, computed and not yet written (N objects, row order)."""

    mem_feat: torch.Tensor  # (N, D, h, w)
    obj_ptr: torch.Tensor  # (N, C) float32
    mem_pos: torch.Tensor  # (D, h, w) the memory encoder's position encoding
    prompted_rows: List[int]  # rows whose memory is a conditioning memory


@dataclass
class StreamStep:
    """One stream's part of a step: its objects on this frame, its rows among all streams', and what the
    model computed for it (outputs, memory to write) before anything of the stream changes."""

    state: StreamState
    frame: Frame
    frame_size: Tuple[int, int]
    frame_index: int
    object_ids: List[int]  # tracked objects, then new ones whose first prompt is pending (row order)
    first_row: int = 0  # its first row among the rows of all streams of its model calls
    outputs: Optional[StepOutputs] = None
    memory: Optional[NewMemory] = None
    # motion="samurai": what the objects' filters decided, (its rows in the stream, the choice), in decode order
    motion: List[Tuple[List[int], MotionChoice]] = field(default_factory=list)

    @classmethod
    def start(cls, state: StreamState, frame: Frame, frame_size: Tuple[int, int]) -> "StreamStep":
        return cls(state, frame, frame_size, state.frame_index, state.object_ids)

    @property
    def rows(self) -> range:
        """Its rows among the rows of all streams."""
        return range(self.first_row, self.first_row + len(self.object_ids))

    def prompts(self) -> List[Optional[PreparedPrompt]]:
        """The pending prompt of each object (None: tracked from memory only)."""
        return [self.state.pending_prompt(obj_id) for obj_id in self.object_ids]

    def known_rows(self) -> List[bool]:
        """Whether each object has a memory (was prompted on an earlier frame)."""
        return self.state.remembered(len(self.object_ids))


def frame_rows(tensor: torch.Tensor, row_frame: List[int]) -> torch.Tensor:
    """A frame feature (F, ...) for rows reading frames `row_frame`: batch 1 (a view, shared by every row)
    when they all read one frame, else one copy per row (index_select; SAM 2's components take either)."""
    first = row_frame[0]
    if all(frame == first for frame in row_frame):
        return tensor[first:first + 1]
    return tensor.index_select(0, to_device(row_frame, tensor.device))


def concat_readouts(readouts: List[MemoryReadout]) -> MemoryReadout:
    """The rows of several readouts with the same slot counts as one readout (the first one unchanged).

    The spatial position encoding of memory slots is the memory encoder's, the same in every stream's
    bank: the first readout's, expanded over all rows, serves them all without a copy.
    """
    if len(readouts) == 1:
        return readouts[0]
    first = readouts[0]
    rows = sum(readout.mem_feats.shape[0] for readout in readouts)

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(readout, name) for readout in readouts])

    return MemoryReadout(
        mem_feats=cat("mem_feats"),
        mem_pos=first.mem_pos[:1].expand(rows, *first.mem_pos.shape[1:]),
        mem_tpos_index=cat("mem_tpos_index"),
        mem_valid=cat("mem_valid"),
        ptrs=cat("ptrs"),
        ptr_tpos=cat("ptr_tpos"),
        ptr_valid=cat("ptr_valid"),
        complete=all(readout.complete for readout in readouts),
    )


def spread(rows: int, max_streams: int) -> List[int]:
    """`rows` objects spread as evenly as possible over min(max_streams, rows) streams."""
    streams = min(max_streams, rows)
    return [rows // streams + (1 if index < rows % streams else 0) for index in range(streams)]


def is_mask(prompt: Optional[PreparedPrompt]) -> bool:
    return prompt is not None and prompt.mask is not None


def group_by_num_points(rows: List[int], prompt_of_row: Dict[int, Optional[PreparedPrompt]]) -> List[List[int]]:
    """Split rows with point prompts into groups of equal point count (one decoder batch each)."""
    groups: Dict[int, List[int]] = {}
    for row in rows:
        prompt = prompt_of_row[row]
        if prompt is not None and prompt.points is not None:
            groups.setdefault(prompt.points.shape[0], []).append(row)
    return list(groups.values())


def gather_rows(decoded: Dict[int, Tuple[DecodeOutput, int]], num_objects: int) -> StepOutputs:
    """Assemble per-object outputs of several decoder batches into row order."""
    sources = [decoded[row] for row in range(num_objects)]
    first = sources[0][0]
    if all(out is first for out, _ in sources) and [i for _, i in sources] == list(range(num_objects)):
        return frame_outputs(first)  # the common case: every object tracked in one batch
    parts = [frame_outputs(out) for out, _ in sources]
    return StepOutputs(
        *(torch.stack([part[k][i] for part, (_, i) in zip(parts, sources)]) for k in range(len(StepOutputs._fields)))
    )


def frame_outputs(out: DecodeOutput) -> StepOutputs:
    """The fields of a DecodeOutput the tracker keeps, as float32 where they leave the model."""
    return StepOutputs(
        low_res_masks=out.low_res_masks.float(),
        high_res_masks=out.high_res_masks.float(),
        ious=out.ious.float().amax(dim=1),
        obj_ptr=out.obj_ptr.float(),
        object_score_logits=out.object_score_logits.float(),
    )


def frame_result(step: StreamStep, image_size: int, device: torch.device) -> Tuple[TrackResult, List[bool]]:
    """The step's outputs at the frame's resolution, and whether each object is absent (object score
    <= 0); object states are filled in by `_commit`."""
    outputs = step.outputs
    if outputs is None:
        return empty_result(step.frame_index, step.frame_size, image_size, device), []
    low_res = outputs.low_res_masks.float()
    logits = upsample_logits(low_res, step.frame_size)
    masks = logits > 0
    scores = outputs.object_score_logits.float()[:, 0]
    result = TrackResult(
        frame_index=step.frame_index,
        object_ids=list(step.object_ids),
        masks=masks,
        logits=logits,
        low_res_logits=low_res,
        ious=outputs.ious.float(),
        presence=torch.sigmoid(scores),
        states=[],
        boxes=boxes_from_masks(masks),
    )
    return result, (scores <= 0).tolist()


def empty_result(frame_index: int, frame_size: Tuple[int, int], image_size: int, device: torch.device
                 ) -> TrackResult:
    low = image_size // 4
    height, width = frame_size
    return TrackResult(
        frame_index=frame_index,
        object_ids=[],
        masks=torch.zeros(0, height, width, dtype=torch.bool, device=device),
        logits=torch.zeros(0, height, width, device=device),
        low_res_logits=torch.zeros(0, 1, low, low, device=device),
        ious=torch.zeros(0, device=device),
        presence=torch.zeros(0, device=device),
        states=[],
        boxes=torch.zeros(0, 4, device=device),
    )


def decode_chosen(model: SAM2Model, groups: List[Tuple[StreamStep, List[int], List[int]]], features: torch.Tensor,
                  feat_s0: torch.Tensor, feat_s1: torch.Tensor, coords: Optional[torch.Tensor],
                  labels: Optional[torch.Tensor], mask_logits: Optional[torch.Tensor], multimask: bool,
                  config: SamuraiConfig) -> DecodeOutput:
    """motion="samurai": decode (eager) and let each object's filter choose its candidate. Groups are (stream
    step, its rows, their places in the batch); the choices wait in the steps until `write_memory`."""
    motion_groups = [MotionGroup(step.state.motion, rows, positions) for step, rows, positions in groups
                     if step.state.motion is not None]
    out, choices = decode_with_motion(model, motion_groups, features, feat_s0, feat_s1, coords, labels, mask_logits,
                                      multimask, config)
    for (step, rows, _), choice in zip(groups, choices):
        step.motion.append((rows, choice))
    return out


def write_memory(step: StreamStep, samurai: Optional[SamuraiConfig]) -> None:
    """Store the frame's memory of every object of the stream (prompted ones as conditioning memory); with
    motion="samurai" apply the filters' choices first, and keep in the ring only the memories SAMURAI accepts."""
    memory = step.memory
    assert memory is not None, "_track_frames sets the memory of every stream with objects"
    bank = step.state.memory
    bank.mem_pos.copy_(memory.mem_pos)
    num_objects = memory.mem_feat.shape[0]
    prompted = set(memory.prompted_rows)
    tracked_rows = [r for r in range(num_objects) if r not in prompted]
    accepted = _accepted(step, tracked_rows, samurai) if samurai is not None else None
    for rows in (tracked_rows, memory.prompted_rows):
        if not rows:
            continue
        if len(rows) == num_objects:
            feats, ptrs = memory.mem_feat, memory.obj_ptr
        else:
            index = to_device(rows, memory.mem_feat.device)
            feats, ptrs = memory.mem_feat.index_select(0, index), memory.obj_ptr.index_select(0, index)
        if rows is tracked_rows:
            bank.write_recent(rows, step.frame_index, feats, ptrs, accepted)
        else:
            bank.write_conditioning(rows, step.frame_index, feats, ptrs)


def _accepted(step: StreamStep, rows: List[int], samurai: SamuraiConfig) -> List[bool]:
    """Apply the step's filter choices; whether each tracked row's memory is accepted (`memory_flags`)."""
    motion = step.state.motion
    assert step.outputs is not None and motion is not None
    for chosen_rows, choice in step.motion:
        motion.apply(chosen_rows, choice)
    if not rows:
        return []
    device = step.outputs.ious.device
    index = to_device(rows, device)
    motion_score = torch.full((len(step.object_ids),), float("nan"), device=device)
    if samurai.memory_bank_kf_score_threshold is not None:  # else not read: no need to gather the scores
        for chosen_rows, choice in step.motion:
            motion_score.index_copy_(0, to_device(chosen_rows, device), choice.motion_score)
    first = step.state.first_frames(len(step.object_ids))
    return memory_flags([first[r] for r in rows], step.frame_index, step.outputs.ious.index_select(0, index),
                        step.outputs.object_score_logits.index_select(0, index), motion_score.index_select(0, index),
                        samurai)

"""Bounded per-stream memory of SAM 2: exactly what memory attention reads, in preallocated slots.

Meta's predictor keeps every frame's output of every object in dicts keyed by frame index and, on each
frame, reads from them:
  - the spatial memory of every conditioning (prompted) frame, temporal position index num_maskmem - 1;
  - the spatial memories of the num_maskmem - 1 previous frames if they were not conditioning frames,
    temporal position index (distance - 1);
  - the object pointers of the conditioning frames (all in the past while streaming) and of the
    max_obj_ptrs_in_encoder - 1 previous non-conditioning frames, with their signed frame distance.
`MemoryBank` stores only those, per object, in fixed-shape tensors: conditioning slots (capped; the first
prompted frame and the most recent ones are kept), a ring of recent spatial memories indexed by
frame_index mod ring size, and a ring of recent object pointers likewise. Which slots are valid follows
from the frame index stored with each slot, so nothing grows with the stream's length.

Spatial memories are stored in bfloat16 like Meta's predictor does (`maskmem_features.to(torch.bfloat16)`):
this halves the bank and is required for parity, since Meta attends to the rounded values.

With SAMURAI's memory selection (`MemoryBank(selective=True)`) the ring holds instead the last R frames whose
memory passed its thresholds, and the last frame whatever its scores: a frame that does not pass is written
where the next frame's memory will go (slot = accepted count mod R), so it is read on the next frame only.

Objects occupy rows 0..N-1 of every tensor, in the order they were added; removal compacts the rows.
Frame indices live on the CPU (they decide validity and are tiny); features live on the model's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple

import torch

from sam2_rt.runtime.readout import MemoryReadout
from sam2_rt.runtime.transfer import to_device

if TYPE_CHECKING:
    from sam2_rt.modeling.config import ModelConfig

# Frame index stored in an empty slot.
EMPTY = -1


class MemoryBank:
    """Fixed-size memory of up to `capacity` objects of one stream (see the module docstring).

    Arguments:
      capacity: K, the most objects the stream can hold.
      num_conditioning: C >= 1, conditioning frames kept per object.
      num_recent: R = num_maskmem - 1, recent spatial memories per object.
      num_recent_ptrs: Q = max_obj_ptrs_in_encoder - 1, recent object pointers per object.
      slot_shape: shape of one memory frame, ModelConfig.memory_slot_shape: (mem_dim, h, w) for SAM 2,
        (tokens, mem_dim) for EdgeTAM (512 perceiver tokens whatever the image size).
      hidden_dim: width of an object pointer (256).
      device: where the features live.
      storage_dtype: dtype of stored spatial memories (bfloat16, as Meta).
      selective: SAMURAI's memory selection: the recent ring keeps the last R frames whose memory was accepted
        (`write_recent(accepted=...)`), the last frame in any case, in place of the last R frames; they are read
        newest first (temporal position by rank, not by distance).
    """

    def __init__(
        self,
        capacity: int,
        num_conditioning: int,
        num_recent: int,
        num_recent_ptrs: int,
        slot_shape: Sequence[int],
        hidden_dim: int,
        device: torch.device,
        storage_dtype: torch.dtype = torch.bfloat16,
        selective: bool = False,
    ) -> None:
        if num_conditioning < 1:
            raise ValueError(f"num_conditioning must be >= 1, got {num_conditioning}")
        self.capacity = capacity
        self.num_conditioning = num_conditioning
        self.num_recent = num_recent
        self.num_recent_ptrs = num_recent_ptrs
        grid = tuple(int(size) for size in slot_shape)
        # Features on the model's device.
        self.cond_feats = torch.zeros(capacity, num_conditioning, *grid, dtype=storage_dtype, device=device)
        self.cond_ptrs = torch.zeros(capacity, num_conditioning, hidden_dim, device=device)
        self.recent_feats = torch.zeros(capacity, num_recent, *grid, dtype=storage_dtype, device=device)
        self.recent_ptrs = torch.zeros(capacity, num_recent_ptrs, hidden_dim, device=device)
        # The memory encoder's spatial position encoding: the same for every frame and object.
        self.mem_pos = torch.zeros(grid, device=device)
        # Frame index of what each slot holds (EMPTY if nothing), on the CPU.
        self.cond_frames = torch.full((capacity, num_conditioning), EMPTY, dtype=torch.int64)
        self.recent_frames = torch.full((capacity, num_recent), EMPTY, dtype=torch.int64)
        self.recent_ptr_frames = torch.full((capacity, num_recent_ptrs), EMPTY, dtype=torch.int64)
        # selective: memories accepted so far per row; the next recent memory goes to slot accepted % R.
        self.selective = selective
        self.accepted = torch.zeros(capacity, dtype=torch.int64)

    @classmethod
    def for_model(
        cls, config: "ModelConfig", capacity: int, num_conditioning: int, device: torch.device,
        selective: bool = False,
    ) -> "MemoryBank":
        """The bank a stream of this model holds (what `Tracker.create_stream` allocates): R = num_maskmem - 1
        recent memories, Q = max_obj_ptrs_in_encoder - 1 recent pointers, slots of config.memory_slot_shape.

        On ``torch.device("meta")`` nothing is allocated and `nbytes` still counts what the bank would hold.
        """
        return cls(
            capacity=capacity,
            num_conditioning=num_conditioning,
            num_recent=config.num_maskmem - 1,
            num_recent_ptrs=config.max_obj_ptrs_in_encoder - 1,
            slot_shape=config.memory_slot_shape,
            hidden_dim=config.hidden_dim,
            device=device,
            selective=selective,
        )

    def tensors(self) -> Iterator[torch.Tensor]:
        """All tensors the bank holds."""
        yield from (self.cond_feats, self.cond_ptrs, self.recent_feats, self.recent_ptrs, self.mem_pos)
        yield from (self.cond_frames, self.recent_frames, self.recent_ptr_frames)
        if self.selective:
            yield self.accepted

    def nbytes(self) -> int:
        """Bytes held by the bank's tensors (constant for the bank's lifetime)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def clear(self, rows: slice = slice(None)) -> None:
        """Mark the given rows' slots empty (their features are never read again)."""
        self.cond_frames[rows] = EMPTY
        self.recent_frames[rows] = EMPTY
        self.recent_ptr_frames[rows] = EMPTY
        self.accepted[rows] = 0

    def keep_rows(self, keep: Sequence[int], num_rows: int) -> None:
        """Compact the bank after a removal: rows `keep` (ascending) move to 0..len(keep)-1.

        Arguments:
          keep: indices of the rows to keep, ascending, all < num_rows.
          num_rows: rows in use before the removal; rows len(keep)..num_rows-1 become empty.
        """
        kept = len(keep)
        device_index = torch.tensor(list(keep), dtype=torch.int64, device=self.cond_feats.device)
        cpu_index = torch.tensor(list(keep), dtype=torch.int64)
        for tensor in (self.cond_feats, self.cond_ptrs, self.recent_feats, self.recent_ptrs):
            tensor[:kept] = tensor.index_select(0, device_index)
        for tensor in (self.cond_frames, self.recent_frames, self.recent_ptr_frames, self.accepted):
            tensor[:kept] = tensor.index_select(0, cpu_index)
        self.clear(slice(kept, num_rows))

    def write_recent(
        self, rows: List[int], frame_index: int, feats: torch.Tensor, ptrs: torch.Tensor,
        accepted: Optional[Sequence[bool]] = None,
    ) -> None:
        """Store a tracked (non-conditioning) frame's memory and pointer for the given objects.

        Arguments:
          rows: object rows, in the order of `feats` / `ptrs`.
          frame_index: the frame these come from.
          feats: (len(rows), *slot_shape) spatial memories.
          ptrs: (len(rows), hidden_dim) object pointers.
          accepted: selective bank only: whether each row's memory is accepted (it stays among the row's R
            recent memories; one not accepted is kept only until the next frame's memory replaces it).
        """
        if not rows:
            return
        ptr_slot = frame_index % self.num_recent_ptrs
        index = to_device(rows, self.cond_feats.device)
        if self.selective:
            if accepted is None or len(accepted) != len(rows):
                raise ValueError("a selective bank needs one `accepted` flag per row")
            slots = [int(self.accepted[row]) % self.num_recent for row in rows]
            self.recent_feats[index, to_device(slots, self.cond_feats.device)] = feats.to(self.recent_feats.dtype)
            self.recent_frames[rows, slots] = frame_index
            self.accepted[rows] += torch.tensor([bool(a) for a in accepted], dtype=torch.int64)
        else:
            slot = frame_index % self.num_recent
            self.recent_feats[index, slot] = feats.to(self.recent_feats.dtype)
            self.recent_frames[rows, slot] = frame_index
        self.recent_ptrs[index, ptr_slot] = ptrs.float()
        self.recent_ptr_frames[rows, ptr_slot] = frame_index

    def write_conditioning(
        self, rows: List[int], frame_index: int, feats: torch.Tensor, ptrs: torch.Tensor
    ) -> None:
        """Store a prompted frame's memory and pointer as conditioning memory of the given objects.

        When an object's conditioning slots are full, its oldest conditioning frame is dropped, except
        its first one (with a single slot, the new frame replaces the old one). The object's recent
        ring slots for this frame are emptied: Meta never reads a frame as both kinds of memory.

        Arguments: as `write_recent`.
        """
        if not rows:
            return
        slots = [self._conditioning_slot(row) for row in rows]
        device = self.cond_feats.device
        index = to_device(rows, device)
        slot_index = to_device(slots, device)
        self.cond_feats[index, slot_index] = feats.to(self.cond_feats.dtype)
        self.cond_ptrs[index, slot_index] = ptrs.float()
        self.cond_frames[rows, slots] = frame_index
        if not self.selective:  # a selective ring never holds a frame by its index
            self.recent_frames[rows, frame_index % self.num_recent] = EMPTY
        self.recent_ptr_frames[rows, frame_index % self.num_recent_ptrs] = EMPTY

    def fill_history(self, num_rows: int, last_frame: int, frame_index: int) -> None:
        """Warm-up only: make rows 0..num_rows-1 look tracked on every frame just before `frame_index`, with copies
        of the recent memory and pointer of `last_frame` (the last frame they were tracked on), so that frame
        `frame_index` reads a full memory. Shapes and dtypes are those of a real full memory; the content is
        not (Tracker.warmup throws the stream away).
        """
        if frame_index - max(self.num_recent, self.num_recent_ptrs) <= last_frame:
            raise ValueError(f"frame {frame_index} is too close to frame {last_frame} to leave a gap to fill")
        rows = slice(0, num_rows)
        feats = self.recent_feats[rows, last_frame % self.num_recent].clone()
        ptrs = self.recent_ptrs[rows, last_frame % self.num_recent_ptrs].clone()
        for frame in range(frame_index - self.num_recent, frame_index):
            self.recent_feats[rows, frame % self.num_recent] = feats
            self.recent_frames[rows, frame % self.num_recent] = frame
        if self.selective:  # every ring slot holds an accepted memory, written in frame order
            self.accepted[rows] = frame_index
        for frame in range(frame_index - self.num_recent_ptrs, frame_index):
            self.recent_ptrs[rows, frame % self.num_recent_ptrs] = ptrs
            self.recent_ptr_frames[rows, frame % self.num_recent_ptrs] = frame

    def _conditioning_slot(self, row: int) -> int:
        """Slot of `row` that receives a new conditioning frame (a free one, else the one to evict)."""
        frames = self.cond_frames[row]
        free = (frames == EMPTY).nonzero()
        if len(free) > 0:
            return int(free[0])
        order = torch.argsort(frames)
        # order[0] is the first prompted frame: keep it while there is another slot to give up.
        return int(order[1]) if len(order) > 1 else int(order[0])

    def _recent_slots(self, recent_frames: torch.Tensor, frame_index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Which recent slots (rows of `recent_frames`) frame `frame_index` reads, and the maskmem_tpos_enc row of
        each: distance - 1 for the last R frames; rank by recency (0: newest) in a selective bank."""
        if self.selective:
            valid = (recent_frames != EMPTY) & (recent_frames < frame_index)
            newer = valid[:, None, :] & (recent_frames[:, None, :] > recent_frames[:, :, None])
            return valid, torch.where(valid, newer.sum(dim=2), torch.zeros_like(recent_frames))
        dist = frame_index - recent_frames
        valid = (recent_frames != EMPTY) & (dist >= 1) & (dist <= self.num_recent)
        return valid, torch.where(valid, dist - 1, torch.zeros_like(dist))

    def steady_conditioning(self, rows: List[int], frame_index: int) -> Optional[int]:
        """The number c of conditioning frames when the memory of `rows` is full for frame `frame_index`, else None.

        Full (the steady state of a stream): every recent spatial slot and every recent pointer slot of every
        row holds a memory the frame reads (one of the frames just before `frame_index`; any earlier frame in a
        selective bank's ring), and every row uses the same c conditioning slots.
        A compact `read` of such rows then returns exactly c + R spatial slots and c + Q pointers, all valid:
        memory attention needs no key mask. Reads only the frame indices (CPU), never the features.
        """
        if not rows:
            return None
        cpu_index = torch.tensor(rows, dtype=torch.int64)
        recent_frames, ptr_frames = self.recent_frames[cpu_index], self.recent_ptr_frames[cpu_index]
        ptr_dist = frame_index - ptr_frames
        recent_full, _ = self._recent_slots(recent_frames, frame_index)
        ptrs_full = (ptr_frames != EMPTY) & (ptr_dist >= 1) & (ptr_dist <= self.num_recent_ptrs)
        if not (bool(recent_full.all()) and bool(ptrs_full.all())):
            return None
        cond_frames = self.cond_frames[cpu_index]
        cond_valid = (cond_frames != EMPTY) & (cond_frames <= frame_index)
        if not bool((cond_valid == cond_valid[:1]).all()):
            return None
        count = int(cond_valid[0].sum())
        return count if count > 0 else None

    def read(
        self, rows: List[int], frame_index: int, num_maskmem: int, dtype: torch.dtype, compact: bool = True
    ) -> MemoryReadout:
        """Gather the memory of the given objects for tracking frame `frame_index`.

        Arguments:
          rows: object rows to read, in the order of the batch.
          frame_index: the current frame (memories of this frame itself are never read).
          num_maskmem: the model's num_maskmem (R + 1); conditioning slots use tpos row num_maskmem - 1.
          dtype: dtype of the returned spatial memories.
          compact: leave out spatial memory slots (conditioning or recent) that no object of the batch
            uses: they would only be masked out, and at high resolution each costs h*w attention keys.
            Their number then varies (1..C + R; R until the ring has filled and after prompted frames);
            False returns every slot, one fixed shape (for compiled backends). Recent pointer slots
            no object uses are left out too: while the stream is younger than the pointer window this
            lets a single object attend without a key mask (a masked softmax is slower on CPU).
        Returns:
          A MemoryReadout for len(rows) objects.
        """
        device = self.cond_feats.device
        batch = len(rows)
        if rows == list(range(batch)):
            index: torch.Tensor | slice = slice(0, batch)
            cpu_index: torch.Tensor | slice = index
        else:
            cpu_index = torch.tensor(rows, dtype=torch.int64)
            index = to_device(cpu_index, device)
        cond_frames = self.cond_frames[cpu_index]
        cond_valid = (cond_frames != EMPTY) & (cond_frames <= frame_index)
        recent_valid, recent_tpos = self._recent_slots(self.recent_frames[cpu_index], frame_index)
        recent_ptr_frames = self.recent_ptr_frames[cpu_index]
        ptr_dist = frame_index - recent_ptr_frames
        ptr_valid = (recent_ptr_frames != EMPTY) & (ptr_dist >= 1) & (ptr_dist <= self.num_recent_ptrs)

        cond_feats, cond_ptrs, recent_feats = self.cond_feats[index], self.cond_ptrs[index], self.recent_feats[index]
        recent_ptrs = self.recent_ptrs[index]
        if compact:
            ptr_used = ptr_valid.any(dim=0).nonzero()[:, 0]
            ptr_dist, ptr_valid = ptr_dist[:, ptr_used], ptr_valid[:, ptr_used]
            recent_ptrs = recent_ptrs.index_select(1, to_device(ptr_used, device))
            cond_used = cond_valid.any(dim=0).nonzero()[:, 0]
            recent_used = recent_valid.any(dim=0).nonzero()[:, 0]
            cond_frames, cond_valid = cond_frames[:, cond_used], cond_valid[:, cond_used]
            recent_tpos, recent_valid = recent_tpos[:, recent_used], recent_valid[:, recent_used]
            cond_used, recent_used = to_device(cond_used, device), to_device(recent_used, device)
            cond_feats, cond_ptrs = cond_feats.index_select(1, cond_used), cond_ptrs.index_select(1, cond_used)
            recent_feats = recent_feats.index_select(1, recent_used)
        mem_feats = torch.cat((cond_feats, recent_feats), dim=1).to(dtype)
        num_slots = mem_feats.shape[1]
        mem_pos = self.mem_pos.to(dtype).expand(batch, num_slots, *self.mem_pos.shape)
        cond_tpos = torch.full_like(cond_frames, num_maskmem - 1)
        complete = bool(cond_valid.all()) and bool(recent_valid.all()) and bool(ptr_valid.all())
        return MemoryReadout(
            mem_feats=mem_feats,
            mem_pos=mem_pos,
            mem_tpos_index=to_device(torch.cat((cond_tpos, recent_tpos), dim=1), device),
            mem_valid=to_device(torch.cat((cond_valid, recent_valid), dim=1), device),
            ptrs=torch.cat((cond_ptrs, recent_ptrs), dim=1),
            ptr_tpos=to_device(torch.cat((frame_index - cond_frames, ptr_dist), dim=1).float(), device),
            ptr_valid=to_device(torch.cat((cond_valid, ptr_valid), dim=1), device),
            complete=complete,
        )

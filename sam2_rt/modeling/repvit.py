"""Image trunk from timm (``image_encoder.trunk.body.*``): EdgeTAM's RepViT-M1.

timm is the field's implementation of RepViT; we build it without pretrained weights (the checkpoint
brings them) as a multi-level feature extractor, which returns the levels finest first, as the neck
expects. timm is imported when such a trunk is built, so SAM 2 models never import it.

Pinned timm 1.0.29; EdgeTAM's own pin is 1.0.15. Checked (2026-12-04): both build repvit_m1 with the same
676 state_dict keys and shapes, and give bit-equal features from the same weights.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from sam2_rt.modeling.config import TIMM_TRUNK_CHANNELS


class TimmTrunk(nn.Module):
    """A timm model's feature levels (strides 4, 8, 16, 32), under the parameter prefix ``body``.

    Arguments:
      name: a timm architecture of TIMM_TRUNK_CHANNELS, e.g. "repvit_m1" (Meta's config names the
        pretrained tag "repvit_m1.dist_in1k"; the architecture is the same).
      out_indices: feature levels returned, finest first.
    """

    def __init__(self, name: str, out_indices: Sequence[int] = (0, 1, 2, 3)) -> None:
        super().__init__()
        if name not in TIMM_TRUNK_CHANNELS:
            raise ValueError(f"unknown timm trunk {name!r}; expected one of {', '.join(TIMM_TRUNK_CHANNELS)}")
        import timm

        self.body = timm.create_model(
            name, pretrained=False, in_chans=3, features_only=True, out_indices=tuple(out_indices)
        )
        channels = tuple(self.body.feature_info.channels())
        # Coarsest first, the order of the neck's backbone_channel_list (and of Hiera.channel_list).
        self.channel_list: Tuple[int, ...] = tuple(reversed(channels))
        self._reparameterized = False
        if self.channel_list != TIMM_TRUNK_CHANNELS[name]:
            raise ValueError(f"timm {name} gives channels {self.channel_list}, expected {TIMM_TRUNK_CHANNELS[name]}")

    @property
    def reparameterized(self) -> bool:
        """The body is in its inference form (see `reparameterize`)."""
        return self._reparameterized

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the body into its inference form, in place (timm's re-parameterisation: every BatchNorm into its
        convolution, RepViT's parallel 3x3 / 1x1 / identity branches into one convolution). Same features to
        float rounding (~1e-6 relative), 1.2x as fast on a CPU (0.29 -> 0.24 s at 1024 px, bench/RESULTS.md).
        The state_dict then holds the folded weights under timm's inference names: Meta's checkpoint loads
        into the trunk before this, not after. Idempotent."""
        if self._reparameterized:
            return
        from timm.utils.model import reparameterize_model

        reparameterize_model(self.body, inplace=True)
        self._reparameterized = True

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, S, S) normalised RGB -> per level, finest first, (B, C_i, S / 2^(i+2), S / 2^(i+2))."""
        return list(self.body(images))

"""One door from a config to its model class: SAM2Model, or EdgeTAMModel for EdgeTAM's config."""

from __future__ import annotations

from sam2_rt.modeling.config import ModelConfig
from sam2_rt.modeling.sam2 import SAM2Model


def create_model(config: ModelConfig) -> SAM2Model:
    """The untrained model of a config (its modules' own initialisation, on torch's current device)."""
    if config.perceiver_depth > 0:
        # Imported here: EdgeTAM's trunk needs timm, which SAM 2 models never import.
        from sam2_rt.modeling.edgetam import EdgeTAMModel

        return EdgeTAMModel(config)
    return SAM2Model(config)

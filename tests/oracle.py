"""Meta's SAM 2 (sam2==1.1.0) as a test oracle, with seeded random weights, and our model built from it.

    meta = build_meta("sam2.1_hiera_tiny", image_size=512, seed=0)   # SAM2VideoPredictor, eval, CPU
    ours = build_ours_from_meta(meta)                                  # SAM2Model, same weights (strict)

Random weights: Meta initialises many parameters to zeros or constants (position embeddings, layer
scales, tokens), which would hide mistakes in the code that uses them. Every parameter is therefore
redrawn from one seeded generator, scaled so activations stay of order one: Linear/Conv weights
N(0, 1/fan_in), LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2), every other parameter
(embeddings, tokens, position tables, layer scales) N(0, 0.5^2).
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn

from sam2_rt.config import get_config
from sam2_rt.modeling.sam2 import SAM2Model

# Meta's config file of each model (relative to the installed sam2 package).
META_YAML: Dict[str, str] = {
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def meta_overrides(image_size: int) -> List[str]:
    """Hydra overrides: input size, and no hole filling (it needs Meta's CUDA extension; we never fill)."""
    return [f"++model.image_size={image_size}", "++model.fill_hole_area=0"]


def randomize_parameters(model: nn.Module, seed: int) -> None:
    """Redraw every parameter of model in place from a generator seeded with seed (see module doc)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            is_norm = "LayerNorm" in type(module).__name__
            has_fan_in = isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
            for param_name, param in module.named_parameters(recurse=False):
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                if is_norm and param_name == "weight":
                    value = 1.0 + 0.1 * noise
                elif param_name == "bias":
                    value = 0.1 * noise
                elif has_fan_in and param_name == "weight":
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(param)
                    value = noise / math.sqrt(fan_in)
                else:
                    value = 0.5 * noise
                param.copy_(value.to(param.dtype))


def build_meta(name: str, image_size: int = 512, seed: int = 0) -> nn.Module:
    """Meta's SAM2VideoPredictor for a model name (see sam2_rt.config.MODEL_NAMES), on CPU in eval mode,
    with every parameter drawn from seed (its buffers too: the global RNG is seeded before building).

    The model name is kept as ``meta.sam2_rt_name`` for build_ours_from_meta.
    """
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    meta = build_sam2_video_predictor(
        META_YAML[name], ckpt_path=None, device="cpu", hydra_overrides_extra=meta_overrides(image_size)
    )
    randomize_parameters(meta, seed)
    meta.sam2_rt_name = name
    return meta.eval()


def build_ours_from_meta(meta: nn.Module) -> SAM2Model:
    """Our SAM2Model of the same name and image size with Meta's state_dict copied in (strict=True)."""
    ours = SAM2Model(get_config(meta.sam2_rt_name, meta.image_size))
    ours.load_state_dict(meta.state_dict(), strict=True)
    return ours.eval()

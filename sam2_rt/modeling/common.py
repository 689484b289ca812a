"""Small building blocks shared by the SAM 2 heads (prompt encoder, mask decoder, memory modules).

Parameter names follow Meta's `sam2==1.1.0` state_dict layout (`layers.{i}.weight`, `weight`/`bias`),
so checkpoints load with `strict=True`.
"""
from typing import Callable, List, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """A stack of `num_layers` Linear layers with an activation between them (none after the last).

    Arguments:
      input_dim: channels of the input (last dimension).
      hidden_dim: channels of every hidden layer.
      output_dim: channels of the output.
      num_layers: number of Linear layers (>= 1); parameters are `layers.{i}.weight/bias`.
      activation: activation module class applied after every layer but the last.
      sigmoid_output: apply a sigmoid to the output (probabilities instead of logits).

    Shapes: (..., input_dim) float -> (..., output_dim), same dtype.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: Type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        self.num_layers = num_layers
        widths_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        widths_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(w_in, w_out) for w_in, w_out in zip(widths_in, widths_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: Tensor) -> Tensor:
        *hidden, last = self.layers
        for layer in hidden:
            x = self.act(layer(x))
        x = last(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of an NCHW map, independently at every pixel.

    Parameters `weight` (C,) and `bias` (C,). Shapes: (B, C, H, W) float -> (B, C, H, W).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Normalising a channels-last view with the fused layer_norm kernel is cheaper than
        # composing mean/var reductions over dim 1; the permutes are views, not copies.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability `drop_prob`.

    Identity in eval mode or when `drop_prob == 0`. In training the kept samples are rescaled
    by 1 / (1 - drop_prob). Shapes: (B, ...) -> (B, ...).
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * keep / keep_prob


def activation_from_name(name: str) -> Callable[[Tensor], Tensor]:
    """Map Meta's config activation names ("relu", "gelu", "glu") to the functional op."""
    table = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]


def antialiased_bilinear_taps(factor: int) -> Tuple[List[float], int]:
    """1-D weights of torch's antialiased bilinear resize (``F.interpolate(..., mode="bilinear",
    antialias=True, align_corners=False)``) when it shrinks by the integer `factor`.

    Output i reads inputs factor * i - pad + t with the triangle weight 1 - |t - pad + 0.5 - factor / 2| / factor
    (torch's filter of support `factor` around the output's centre); taps of weight 0 are dropped.
    Plain Python numbers, so traced graphs hold them as constants.
    Returns: (K unnormalised taps, pad = the inputs read before factor * i).
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    pad = factor // 2
    taps = [max(0.0, 1.0 - abs(t - pad + 0.5 - factor / 2) / factor) for t in range(2 * factor)]
    while taps[-1] == 0.0:
        taps.pop()
    return taps, pad


def downsample_antialiased(x: Tensor, factor: int) -> Tensor:
    """Shrink an NCHW map by an integer factor exactly as the antialiased bilinear resize does, as one
    strided convolution (TensorRT has no converter for ``aten._upsample_bilinear2d_aa``).

    Near the borders torch renormalises the weights of the taps that fall inside the image; zero padding
    and a division by the padded convolution of ones (the product of two 1-D sums) give the same.
    Shapes: (B, C, H, W) float, H and W multiples of factor -> (B, C, H / factor, W / factor).
    """
    batch, channels, height, width = x.shape
    if height % factor or width % factor:
        raise ValueError(f"a {height}x{width} map cannot shrink by {factor}: sides must be multiples of it")
    tap_values, pad = antialiased_bilinear_taps(factor)
    taps = torch.tensor(tap_values, device=x.device, dtype=x.dtype)
    pad_end = len(tap_values) - factor - pad
    padding = (pad, pad_end, pad, pad_end)
    kernel = torch.outer(taps, taps)[None, None]
    flat = F.pad(x.reshape(batch * channels, 1, height, width), padding)
    summed = F.conv2d(flat, kernel, stride=factor)

    def weight_sums(length: int) -> Tensor:
        ones = F.pad(x.new_ones(1, 1, length), padding[:2])
        return F.conv1d(ones, taps[None, None], stride=factor)[0, 0]

    norm = torch.outer(weight_sums(height), weight_sums(width))
    return (summed / norm).reshape(batch, channels, height // factor, width // factor)

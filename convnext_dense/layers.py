"""The ConvNeXt building blocks: a channels-first LayerNorm and the inverted-bottleneck block."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an ``(N, C, H, W)`` tensor.

    On a channels-last tensor both permutes are views, so no copy is made.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``drop_prob``."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> LayerNorm -> Linear C->4C -> GELU -> Linear 4C->C -> gamma -> DropPath -> +x.

    Args:
        channels: Input and output channels.
        drop_path_rate: Probability of dropping the residual branch in training.
        layer_scale_init_value: Initial value of ``gamma``; ``<= 0`` disables layer scale.
        with_cp: Recompute the block in the backward pass instead of storing its activations.
    """

    def __init__(self, channels: int, drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, with_cp: bool = False) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma: Optional[nn.Parameter] = (
            nn.Parameter(torch.full((channels,), float(layer_scale_init_value)))
            if layer_scale_init_value > 0 else None)
        self.drop_path_rate = drop_path_rate
        self.with_cp = with_cp

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch, before drop path."""
        x = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        return x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and self.training and x.requires_grad:
            branch = checkpoint(self.residual, x, use_reentrant=False)
        else:
            branch = self.residual(x)
        return x + drop_path(branch, self.drop_path_rate, self.training)

    def extra_repr(self) -> str:
        return f'drop_path_rate={self.drop_path_rate}, with_cp={self.with_cp}'

"""ConvNeXt as a dense-prediction backbone for mmdet and mmseg (one class for both)."""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import nn

from ..cpu_fast_paths import channels_first, float32_fallback
from ..registry import MODELS
from .archs import (NUM_STAGES, BackboneArgumentError, declared_outputs, is_int, is_number,
                    normalize_out_indices, resolve_arch)
from .layer_ids import default_num_layers, layer_id
from .layers import ConvNeXtBlock, LayerNorm2d, PatchConv2d


@MODELS.register_module()
class ConvNeXt(BaseModule):
    """ConvNeXt backbone returning a feature pyramid with strides 4/8/16/32 (Liu et al. 2022).

    Arguments follow ``mmpretrain.models.ConvNeXt`` so stock mmdet / mmseg ConvNeXt configs work
    with only ``type`` changed; parameter names follow the official checkpoints, so
    ``convnext_base_22k_224.pth`` loads without renaming. Each output stage has its own
    LayerNorm ``norm{i}``.

    Args:
        arch: 'tiny', 'small', 'base', 'large', 'xlarge' or ``dict(depths=..., channels=...)``.
        in_channels: Channels of the input image.
        out_indices: Stages to output (0..3, negative counts from the end).
        frozen_stages: Freeze the stem and the first ``frozen_stages`` stages (0..4): no gradient
            and kept in eval mode.
        drop_path_rate: Stochastic depth rate of the last block; rates rise linearly from 0.
        layer_scale_init_value: Initial layer-scale ``gamma``; ``<= 0`` disables it.
        with_cp: Activation checkpointing per block (less memory, same results).
        gap_before_final_norm: Only ``False`` is valid: pooling is a classification setting.
        init_cfg: ``dict(type='Pretrained', checkpoint=SRC)`` loads weights from a file, URL,
            Hugging Face directory or hub id in any supported layout (see
            ``convnext_dense.weights``).

    Example:
        >>> backbone = ConvNeXt(arch='tiny', out_indices=(1, 2, 3))
        >>> [f.shape[1] for f in backbone(torch.rand(1, 3, 64, 64))] == list(backbone.out_channels)
        True
    """

    def __init__(self,
                 arch: Union[str, Dict] = 'base',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 frozen_stages: int = 0,
                 drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6,
                 with_cp: bool = False,
                 gap_before_final_norm: bool = False,
                 init_cfg: Optional[Dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.depths, self.channels = resolve_arch(arch)
        if gap_before_final_norm:
            raise BackboneArgumentError(
                'gap_before_final_norm=True pools features for classification; a dense backbone '
                'needs gap_before_final_norm=False')
        if not is_int(in_channels) or in_channels < 1:
            raise BackboneArgumentError(
                f'in_channels must be a positive int, got {in_channels!r}')
        if not is_int(frozen_stages):
            raise BackboneArgumentError(
                f'frozen_stages must be an int (0 to {NUM_STAGES}), got {frozen_stages!r}')
        if not 0 <= frozen_stages <= NUM_STAGES:
            raise BackboneArgumentError(
                f'frozen_stages {frozen_stages!r} is out of range (0 to {NUM_STAGES})')
        if not is_number(drop_path_rate) or not 0.0 <= drop_path_rate < 1.0:
            raise BackboneArgumentError(
                f'drop_path_rate {drop_path_rate!r} is out of range [0, 1)')
        if not is_number(layer_scale_init_value) or not math.isfinite(layer_scale_init_value):
            raise BackboneArgumentError(
                'layer_scale_init_value must be a finite number (<= 0 disables layer scale), '
                f'got {layer_scale_init_value!r}')
        if not isinstance(with_cp, bool):
            raise BackboneArgumentError(f'with_cp must be True or False, got {with_cp!r}')
        _pretrained_cfg(init_cfg)  # refuse a broken one now, not when weights are loaded
        self.out_indices = normalize_out_indices(out_indices)
        self.frozen_stages = frozen_stages
        self.out_channels, self.out_strides = declared_outputs(arch, self.out_indices)

        stem = nn.Sequential(
            nn.Conv2d(in_channels, self.channels[0], kernel_size=4, stride=4),
            LayerNorm2d(self.channels[0]))
        self.downsample_layers = nn.ModuleList([stem] + [
            nn.Sequential(LayerNorm2d(self.channels[i - 1]),
                          PatchConv2d(self.channels[i - 1], self.channels[i], 2))
            for i in range(1, NUM_STAGES)])
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            first = sum(self.depths[:i])
            self.stages.append(nn.Sequential(*[
                ConvNeXtBlock(self.channels[i], rates[first + j], layer_scale_init_value, with_cp)
                for j in range(depth)]))
        for i in self.out_indices:
            self.add_module(f'norm{i}', LayerNorm2d(self.channels[i]))
        # Conv weights in channels-last too, or oneDNN converts them on every call.
        self.to(memory_format=torch.channels_last)
        self._freeze_stages()
        self._layer_scale = layer_scale_init_value > 0
        self._float32_copy = float32_fallback.Float32Copy()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return one ``(N, C_i, H / s_i, W / s_i)`` map per index in ``out_indices``.

        bfloat16 (a cast model or CPU autocast) on a CPU without bf16 arithmetic is computed in
        float32 and returned in the dtype the plain path returns: bfloat16 for a cast model, and
        under autocast float32 where the layer scale promotes it (see
        :mod:`convnext_dense.cpu_fast_paths.float32_fallback`).
        """
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self._check_input(x)
        request = float32_fallback.emulated_bf16_request(self, x)
        if request is not None:
            return float32_fallback.run(self, x, request, ConvNeXt._forward, self._float32_copy,
                                        self._layer_scale)
        return self._forward(x)

    def _check_input(self, x) -> None:
        """Name what is wrong with an input the stem would reject with a less clear error."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'ConvNeXt takes a (N, C, H, W) tensor, got {type(x).__name__}')
        in_channels = self.downsample_layers[0][0].in_channels
        if x.dim() != 4 or x.shape[1] != in_channels:
            raise ValueError(f'ConvNeXt takes (N, {in_channels}, H, W) images, got shape '
                             f'{tuple(x.shape)}')
        if not x.is_floating_point():
            raise TypeError(f'ConvNeXt takes floating-point images, got {x.dtype}: convert and '
                            "normalise them first (mmdet / mmseg's data preprocessors do)")
        weights = self.downsample_layers[0][0].weight.dtype
        if x.dtype != weights and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f'images are {x.dtype} but the backbone is {weights}: pass '
                            f'x.to({weights}), or run under torch.autocast')
        smallest = 4 * 2 ** max(self.out_indices)  # the stride of the last stage it computes
        if min(x.shape[2:]) < smallest:
            raise ValueError(f'images of {x.shape[2]}x{x.shape[3]} are smaller than the '
                             f'{smallest}x{smallest} the output stages {self.out_indices} need; '
                             f'pad them to a multiple of {smallest} (mmdet\'s data preprocessor: '
                             f'pad_size_divisor={smallest}; mmseg\'s: '
                             f'test_cfg=dict(size_divisor={smallest}))')

    def _forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        # Channels-last makes every permute in the blocks a view instead of a copy; converting the
        # 3-channel input is cheaper than converting the stem's output.
        x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for i in range(max(self.out_indices) + 1):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
            if i in self.out_indices:
                # Standard layout out: mmcv's deformable-conv ops (VFNet, RepPoints, Cascade RPN
                # heads behind an FPN) reject channels-last inputs.
                outs.append(channels_first(getattr(self, f'norm{i}')(x)))
        return tuple(outs)

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages):
            for module in (self.downsample_layers[i], self.stages[i]):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'ConvNeXt':
        """Switch mode, keeping frozen stages in eval."""
        super().train(mode)
        self._freeze_stages()
        return self

    def init_weights(self) -> None:
        """Truncated-normal init (std 0.02), or load ``init_cfg=dict(type='Pretrained', ...)``."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        pretrained = _pretrained_cfg(self.init_cfg)
        if pretrained is not None:
            from ..weights import load_pretrained
            load_pretrained(self, pretrained['checkpoint'], prefix=pretrained.get('prefix'))
        elif self.init_cfg is not None:
            super().init_weights()
        self._is_init = True

    def layer_decay_num_layers(self) -> int:
        """``num_layers`` of the official layer-decay recipes for this depth (12 for B, 6 for T)."""
        return default_num_layers(self.depths)

    def layer_decay_id(self, param_name: str, decay_type: str, num_layers: int) -> int:
        """Layer id of a backbone parameter (name relative to the backbone) for layer decay."""
        return layer_id(param_name, decay_type, num_layers)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Every load_state_dict path (mmengine's load_checkpoint behind load_from, init_detector,
        # init_model; torch) passes here: take any ConvNeXt naming and refuse a partial backbone.
        from ..weights.self_load import adopt_backbone_keys
        adopt_backbone_keys(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _pretrained_cfg(init_cfg) -> Optional[Dict]:
    """The ``type='Pretrained'`` entry of ``init_cfg`` (a dict or a list of them, as mmengine
    allows), or None.

    Raises:
        BackboneArgumentError: more than one such entry, or one without ``checkpoint``.
    """
    entries = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    pretrained = [c for c in entries if isinstance(c, dict) and c.get('type') == 'Pretrained']
    if len(pretrained) > 1:
        raise BackboneArgumentError(
            f'init_cfg has {len(pretrained)} Pretrained entries; give one')
    if pretrained and not pretrained[0].get('checkpoint'):
        raise BackboneArgumentError(f"init_cfg {pretrained[0]!r} names no checkpoint: "
                                    "dict(type='Pretrained', checkpoint=PATH_URL_OR_HUB_ID)")
    return pretrained[0] if pretrained else None

"""One benchmark case: which implementation, task, precision and options, and its step function."""
import contextlib
import copy
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn

from ...cpu_fast_paths import cpu_support
from ...model.backbone import ConvNeXt
from .peers import BUILDERS, FeatureMaps, PEERS

IMPLS = ('ours',) + PEERS
TASKS = ('infer', 'train')
PRECISIONS = ('fp32', 'tf32', 'bf16-autocast', 'bf16-cast')


@dataclass(frozen=True)
class Case:
    """What to run.

    Attributes:
        impl: ``'ours'`` or a peer (``convnext_dense.extras.benchmark.peers.PEERS``).
        task: ``'infer'`` (forward under ``inference_mode``) or ``'train'`` (forward and backward
            of the summed output means; no optimizer step).
        precision: ``'fp32'``, ``'tf32'`` (float32 with TF32 matmuls and convolutions on an
            NVIDIA GPU; plain float32 elsewhere), ``'bf16-autocast'`` (float32 weights under
            autocast) or ``'bf16-cast'`` (model and input cast to bfloat16; inference only).
        size: Input ``(height, width)``.
        batch: Images per step.
        channels_last: Peers: model and input in channels-last memory format. Ours: input only
            (the backbone is channels-last inside in any case).
        with_cp: Activation checkpointing (ours: ``with_cp=True``; timm: grad checkpointing).
        compile: ``torch.compile`` the model.
        mlp_route: Ours, fp32 inference: run every fused block MLP through ``'onednn'``,
            ``'onednn_separate_gelu'`` or ``'blas'``
            (:func:`~convnext_dense.cpu_fast_paths.cpu_support.force_mlp_route`); ``None``: the
            route this machine picks.
        train_route: Ours, fp32 training: run the blocks' Linear layers through ``'onednn'`` or
            ``'blas'`` (``convnext_dense.cpu_fast_paths.cpu_support.force_train_matmul_route``);
            ``None``: the route this machine picks.
        drop_path_rate: Training: stochastic depth rising linearly to this rate at the last
            block, in every implementation (the configs train with 0.4-0.7).
    """

    impl: str
    task: str
    precision: str
    size: Tuple[int, int]
    batch: int = 1
    channels_last: bool = False
    with_cp: bool = False
    compile: bool = False
    mlp_route: Optional[str] = None
    train_route: Optional[str] = None
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        for name, value, allowed in (('impl', self.impl, IMPLS), ('task', self.task, TASKS),
                                     ('precision', self.precision, PRECISIONS)):
            if value not in allowed:
                raise ValueError(f"{name} '{value}' is not one of {allowed}")
        if self.precision == 'bf16-cast' and self.task == 'train':
            raise ValueError("precision 'bf16-cast' is for inference; train with 'bf16-autocast'")
        if self.with_cp and self.impl in ('huggingface',):
            raise ValueError("Hugging Face's ConvNeXt has no gradient checkpointing")
        if self.mlp_route is not None and (
                self.mlp_route not in cpu_support.MLP_ROUTES or self.impl != 'ours'
                or self.task != 'infer' or self.precision != 'fp32'):
            raise ValueError(f"mlp_route {self.mlp_route!r}: one of {cpu_support.MLP_ROUTES}, "
                             "for our backbone's fp32 inference only")
        if self.train_route is not None and (
                self.train_route not in cpu_support.TRAIN_MATMUL_ROUTES or self.impl != 'ours'
                or self.task != 'train' or self.precision != 'fp32'):
            raise ValueError(f"train_route {self.train_route!r}: one of "
                             f"{cpu_support.TRAIN_MATMUL_ROUTES}, for our backbone's fp32 training "
                             "only")
        if self.drop_path_rate and (self.task != 'train' or not 0 < self.drop_path_rate < 1):
            raise ValueError(f'drop_path_rate {self.drop_path_rate!r}: in [0, 1), for training '
                             'only (inference runs no drop path)')

    def label(self) -> str:
        """Short name for tables: impl and the options that are on."""
        options = [name for name in ('channels_last', 'with_cp', 'compile') if getattr(self, name)]
        if self.mlp_route is not None:
            options.append(f'{self.mlp_route}_mlp')
        if self.train_route is not None:
            options.append(f'{self.train_route}_matmuls')
        if self.drop_path_rate:
            options.append(f'drop_path{self.drop_path_rate:g}')
        return '+'.join([self.impl] + options)

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return {**asdict(self), 'size': list(self.size)}


def build_model(impl: str, arch, out_indices: Sequence[int] = (0, 1, 2, 3),
                drop_path_rate: float = 0.0) -> nn.Module:
    """Our backbone or a peer, with random weights, in float32 on CPU (drop path rising linearly
    to ``drop_path_rate`` in each)."""
    if impl == 'ours':
        return ConvNeXt(arch=arch, out_indices=out_indices, drop_path_rate=drop_path_rate)
    return BUILDERS[impl](arch, out_indices, drop_path_rate=drop_path_rate)


def prepare(model: nn.Module, case: Case, device: str = 'cpu') -> nn.Module:
    """A copy of ``model`` set up for ``case``: mode, precision, memory format, checkpointing."""
    model = copy.deepcopy(model).to(device)
    if case.precision == 'bf16-cast':
        model = model.to(torch.bfloat16)
    if case.with_cp:
        _enable_checkpointing(model)
    if case.channels_last and isinstance(model, FeatureMaps):
        model = model.to(memory_format=torch.channels_last)
    model.train(case.task == 'train')
    if case.compile:
        model = torch.compile(model)
    return model


def _enable_checkpointing(model: nn.Module) -> None:
    if isinstance(model, ConvNeXt):
        for module in model.modules():
            if hasattr(module, 'with_cp'):
                module.with_cp = True
    elif isinstance(model, FeatureMaps) and model.kind == 'timm':
        model.model.set_grad_checkpointing(True)
    elif isinstance(model, FeatureMaps) and model.kind == 'mmpretrain':
        for module in model.model.modules():
            if hasattr(module, 'with_cp'):
                module.with_cp = True
    else:
        raise ValueError(f'{type(model).__name__} has no activation checkpointing')


@contextlib.contextmanager
def tf32():
    """Allow TF32 matmuls and cuDNN convolutions inside the ``with`` body (NVIDIA GPUs)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def make_images(case: Case, device: str = 'cpu', seed: int = 0) -> torch.Tensor:
    """Seeded normal images of the case's batch and size, dtype and memory format."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(case.batch, 3, *case.size, generator=generator).to(device)
    if case.precision == 'bf16-cast':
        images = images.to(torch.bfloat16)
    if case.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def make_step(model: nn.Module, case: Case,
              images: torch.Tensor) -> Callable[[], Optional[Tuple[torch.Tensor, ...]]]:
    """A zero-argument callable running one step; inference steps return the feature maps."""
    device_type = images.device.type

    def autocast():
        if case.precision == 'bf16-autocast':
            return torch.autocast(device_type, dtype=torch.bfloat16)
        if case.precision == 'tf32':
            return tf32()
        return contextlib.nullcontext()

    if case.task == 'infer':
        def infer_step():
            with torch.inference_mode(), autocast(), cpu_support.force_mlp_route(case.mlp_route):
                return tuple(model(images))
        return infer_step

    params = [p for p in model.parameters() if p.requires_grad]

    def train_step():
        for param in params:
            param.grad = None
        with autocast(), cpu_support.force_train_matmul_route(case.train_route):
            feats = model(images)
            loss = sum(feat.float().mean() for feat in feats)
            loss.backward()
    return train_step

"""Fused oneDNN kernels for the ConvNeXt block's inference path.

On CPU, when nothing needs a gradient, the block runs ``Linear + GELU`` and ``Linear + layer scale
+ residual add`` as two oneDNN matmuls with the bias, the exact (erf) GELU and the sum applied in
the matmul's epilogue: no bias copy and no separate GELU, scale or add pass; large inputs go
through both in chunks of rows (:func:`fused_mlp`). The weights they use (``pwconv2`` scaled by
``gamma``, cast to the compute dtype) are cached per block until a parameter changes. Where BLAS
matmuls run the block instead (:func:`blas_mlp_chunk`), full chunks use weights packed by MKL
once (:class:`MklPackedWeights`).
"""
import weakref
from typing import Callable, Optional, Sequence, Tuple

import torch

from . import column_split

# Whether this torch build has oneDNN's fused linear operators (CPU builds with MKLDNN). A
# constant, so that torch.compile reads it without tracing into torch.backends.
ONEDNN_LINEAR = (torch.backends.mkldnn.is_available()
                 and hasattr(torch.ops.mkldnn, '_linear_pointwise')
                 and hasattr(torch.ops.mkldnn, '_reorder_linear_weight'))
# Whether it has MKL's matmul on weights packed in advance (``cblas_sgemm_compute``; x86 builds).
MKL_PACKED_LINEAR = (torch.backends.mkl.is_available()
                     and hasattr(torch.ops.mkl, '_mkl_linear')
                     and hasattr(torch.ops.mkl, '_mkl_reorder_linear_weight'))


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``gelu(x @ weight.T + bias)`` (exact erf GELU) as one oneDNN matmul."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'gelu', [], 'none')


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               other: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T + bias + other`` as one oneDNN matmul (``other`` contiguous, output's shape)."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, 'add')


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T + bias`` as one oneDNN matmul (the bias added in the epilogue, not copied)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')


def second_matmul(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``hidden @ weight.T + bias (+ shortcut)``: :func:`linear`, or :func:`linear_add`."""
    if shortcut is None:
        return linear(hidden, weight, bias)
    return linear_add(hidden, weight, bias, shortcut)


# Most bytes of GELU activations (pwconv1's 4C-channel output) that :func:`fused_mlp` holds at
# once. Whole, they reach tens of MB (16 MB in bf16, 32 MB in fp32 for ConvNeXt-B's first stage at
# 512x512): glibc tends to serve blocks that large fresh from the OS, so calls page-fault and
# zero them anew, which costs more than a few smaller matmuls and one copy of the output.
# The BLAS route takes half as many: ConvNeXt-B's wide stages then run chunks of 1024, 512 and 256
# rows, which whole 512x512 inputs fill, and full chunks are what its MKL-packed weights serve.
HIDDEN_CHUNK_BYTES = 8 << 20
_MIN_CHUNK_ROWS = 256


def chunk_rows(hidden_width: int, itemsize: int, onednn: bool) -> int:
    """Rows per chunk of :func:`fused_mlp` for GELU activations ``hidden_width`` wide."""
    budget = HIDDEN_CHUNK_BYTES if onednn else HIDDEN_CHUNK_BYTES // 2
    return max(_MIN_CHUNK_ROWS, budget // (hidden_width * itemsize))


def blas_mlp_chunk(x: torch.Tensor, weight1: torch.Tensor, bias1: torch.Tensor,
                   weight2: torch.Tensor, bias2: torch.Tensor,
                   shortcut: Optional[torch.Tensor] = None,
                   packed: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """:func:`fused_mlp` on 2-D ``x`` with plain ``(out, in)`` weights, through torch's BLAS matmul.

    The bias of the first layer rides in the matmul (``addmm``), GELU runs in place, and the
    second matmul accumulates into ``shortcut + bias2``: one pass over the hidden activations
    more than oneDNN's epilogues, but on Intel CPUs with AVX2 only MKL's matmul is faster than
    oneDNN's for wide layers (see :func:`convnext_dense.cpu_fast_paths.cpu_support.mlp_route`).
    ``packed``: both weights packed by MKL for exactly ``x``'s number of rows
    (:class:`MklPackedWeights`), which spares MKL packing them in every call.
    """
    if packed is not None:
        rows = x.shape[0]
        hidden = torch.ops.mkl._mkl_linear(x, packed[0], weight1, bias1, rows)
        torch.ops.aten.gelu_(hidden)
        out = torch.ops.mkl._mkl_linear(hidden, packed[1], weight2, bias2, rows)
        return out if shortcut is None else out.add_(shortcut)
    hidden = torch.addmm(bias1, x, weight1.t())
    torch.ops.aten.gelu_(hidden)
    if shortcut is None:
        return torch.addmm(bias2, hidden, weight2.t())
    return torch.add(shortcut, bias2).addmm_(hidden, weight2.t())


def fused_mlp(x: torch.Tensor, weight1: torch.Tensor, bias1: torch.Tensor, weight2: torch.Tensor,
              bias2: torch.Tensor, shortcut: Optional[torch.Tensor] = None,
              onednn: bool = True,
              column_halves: Optional[Callable[[], Tuple[torch.Tensor, ...]]] = None,
              mkl_packed: Optional[Callable[[int], Tuple[torch.Tensor, torch.Tensor]]] = None,
              separate_gelu: bool = False) -> torch.Tensor:
    """``gelu(x @ weight1.T + bias1) @ weight2.T + bias2 (+ shortcut)`` over the last dim of ``x``.

    Rows are taken in chunks of :func:`chunk_rows` (GELU activations within
    :data:`HIDDEN_CHUNK_BYTES`), each through :func:`linear_gelu`, then :func:`linear` or
    :func:`linear_add` (``onednn``), or through :func:`blas_mlp_chunk`. In float32 the result
    equals one call over all rows; in bfloat16, where oneDNN may pick another kernel for fewer
    rows, it can differ by a rounding.

    Args:
        x: ``(..., C)`` input, contiguous.
        weight1, bias1, weight2, bias2: The two layers (from :class:`InferenceWeights`: packed
            for oneDNN, or plain for BLAS).
        shortcut: Added to the result (contiguous, the result's shape and dtype), or ``None``.
        onednn: oneDNN's fused matmuls (packed weights), else torch's BLAS matmul.
        column_halves: Returns the second layer's two column halves (:class:`ColumnHalves`):
            oneDNN's second matmul may then run as two where that is faster
            (:mod:`.column_split`).
        mkl_packed: Returns both layers packed by MKL for a number of rows
            (:class:`MklPackedWeights`): the BLAS route's full chunks run on them.
        separate_gelu: With ``onednn``: GELU in place after the first matmul instead of in its
            epilogue (faster with AVX2 kernels, see
            :data:`~convnext_dense.cpu_fast_paths.cpu_support.MLP_ROUTES`); the same result.

    Returns:
        ``(..., C_out)`` in ``x``'s dtype.
    """
    lead, rows = x.shape[:-1], x.numel() // x.shape[-1]
    x = x.reshape(rows, x.shape[-1])
    if shortcut is not None:
        shortcut = shortcut.reshape(rows, shortcut.shape[-1])
    step = chunk_rows(bias1.numel(), x.element_size(), onednn)
    # One packing per block, for full chunks; a shorter last chunk runs on the plain weights.
    packed = (mkl_packed(step) if mkl_packed is not None and not onednn and rows >= step
              else None)

    def chunk(start: int) -> torch.Tensor:
        part = None if shortcut is None else shortcut[start:start + step]
        if not onednn:
            full = packed is not None and rows - start >= step
            return blas_mlp_chunk(x[start:start + step], weight1, bias1, weight2, bias2, part,
                                  packed if full else None)
        if separate_gelu:
            hidden = torch.ops.aten.gelu_(linear(x[start:start + step], weight1, bias1))
        else:
            hidden = linear_gelu(x[start:start + step], weight1, bias1)
        if column_halves is not None and column_split.applies(hidden, bias2.numel()):
            return column_split.second_layer(hidden, weight2, bias2, part, column_halves,
                                             second_matmul)
        return second_matmul(hidden, weight2, bias2, part)

    if rows <= step:
        out = chunk(0)
    else:
        out = x.new_empty(rows, bias2.numel())
        for start in range(0, rows, step):
            out[start:start + step] = chunk(start)
    return out.view(*lead, bias2.numel())


def version_key(tensors: Sequence[Optional[torch.Tensor]]) -> Optional[Tuple]:
    """A key that changes whenever one of ``tensors`` is modified in place, moved or replaced.

    ``None`` when a tensor keeps no version counter (created under ``torch.inference_mode``).
    """
    key = []
    for tensor in tensors:
        if tensor is None:
            key.append(None)
            continue
        try:
            version = tensor._version
        except RuntimeError:
            return None
        key.append((tensor.data_ptr(), version, tensor.dtype, tensor.device))
    return tuple(key)


def storage_refs(tensors: Sequence[Optional[torch.Tensor]]) -> Tuple:
    """Weak references to the storages of ``tensors`` (``None`` for a missing tensor)."""
    return tuple(None if t is None else weakref.ref(t.untyped_storage()) for t in tensors)


def same_storages(tensors: Sequence[Optional[torch.Tensor]], refs: Tuple) -> bool:
    """Whether each of ``tensors`` still uses the storage that ``refs`` (:func:`storage_refs`)
    pointed at when they were taken."""
    return all((t is None and r is None) or (t is not None and r is not None
                                             and r() is t.untyped_storage())
               for t, r in zip(tensors, refs))


# Values compared per parameter (see value_samples): enough that an update of every element
# (an optimizer step, an EMA) cannot miss them all; few enough to cost microseconds.
SAMPLES_PER_TENSOR = 16


def value_samples(tensors: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
    """Up to :data:`SAMPLES_PER_TENSOR` values of each tensor, spread evenly over its memory,
    as one float64 tensor (a copy: later in-place changes of ``tensors`` do not reach it)."""
    parts = []
    for tensor in tensors:
        if tensor is None or tensor.numel() == 0:
            continue
        values = tensor.detach()
        if values.is_contiguous() or values.is_contiguous(memory_format=torch.channels_last):
            # Dense memory in some order: read it in that order without a copy.
            values = values.as_strided((values.numel(),), (1,), values.storage_offset())
        else:
            values = values.reshape(-1)
        step = max(1, values.numel() // SAMPLES_PER_TENSOR)
        parts.append(values[::step].to(torch.float64))
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)


class ParameterCache:
    """Something derived from parameters, kept until one of them changes (base class).

    A cached value is valid while every parameter keeps its version, storage, dtype and device
    (see :func:`version_key`), is the same object, and holds the same values at a few places
    (:func:`value_samples`): writes through ``param.data`` (mmengine's EMA, mmdet's mean
    teacher) and fused optimizers (``torch.optim.AdamW(fused=True)``) change values without
    changing the version. Parameters created under ``torch.inference_mode`` keep no version
    counter, so their values are never kept. Copies and pickles start empty.

    The storage is compared as an object, not only by address: ``param.data = new`` (what
    ``module.to(dtype)`` does) keeps the version counter, and the new storage can be allocated at
    the address the old one freed (``model.to(torch.bfloat16).to(torch.float32)`` did so now and
    then), so an address alone could hand back the old weights. Torch keeps one Python object per
    live storage, so a weak reference to it dies with the storage.
    """

    def __init__(self) -> None:
        self.clear()

    def cached(self, params: Tuple, extra: Tuple = ()) -> Tuple[Optional[Tuple], object]:
        """``(key, value)``: the key for ``params`` (plus ``extra``) and the kept value, or
        ``None`` as the value when it must be rebuilt (then :meth:`keep` it under that key)."""
        key = version_key(params)
        key = None if key is None else key + tuple(extra)
        # The same parameter objects too: a replaced parameter could reuse a freed address.
        if (key is not None and key == self._key and len(params) == len(self._params)
                and all(p is q for p, q in zip(params, self._params))
                and same_storages(params, self._storages)
                and torch.equal(value_samples(params), self._samples)):
            return key, self._value
        return key, None

    def keep(self, key: Optional[Tuple], params: Tuple, value: object) -> None:
        """Keep ``value`` for ``params`` (nothing is kept without a key)."""
        if key is not None:
            self._key, self._params, self._value = key, params, value
            self._storages = storage_refs(params)
            self._samples = value_samples(params)

    def clear(self) -> None:
        """Drop the kept value."""
        self._key: Optional[Tuple] = None
        self._params: Tuple = ()
        self._storages: Tuple = ()
        self._samples: Optional[torch.Tensor] = None
        self._value: object = None

    def __deepcopy__(self, memo) -> 'ParameterCache':
        return type(self)()  # rebuilt on demand (packed oneDNN tensors cannot be deep-copied)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.clear()


class InferenceWeights(ParameterCache):
    """A block's fused-path weights: pwconv1, and pwconv2 with ``gamma`` folded in, in one dtype.

    ``gamma * (g @ W2.T + b2) == g @ (gamma * W2).T + gamma * b2``: folding the layer scale into
    the weights lets the residual add run in the matmul's epilogue. The fold is computed in
    float32, cast to the compute dtype and packed in oneDNN's layout once, then kept (as much
    memory as the two layers' weights) until a parameter changes (an optimizer step, an EMA
    update, ``load_state_dict``, ``.to()``: see :class:`ParameterCache`) or :meth:`clear` is
    called. A write to a few elements through ``param.data`` may go unseen: switch the model's
    mode (``model.train()``; ``model.eval()``) after one.
    Parameters created under ``torch.inference_mode`` keep no version counter: their fused
    weights are rebuilt on every call (correct, slower). Copies and pickles start empty.
    """

    def get(self, pwconv1: torch.nn.Linear, pwconv2: torch.nn.Linear,
            gamma: Optional[torch.Tensor], dtype: torch.dtype,
            onednn: bool = True) -> Tuple[torch.Tensor, ...]:
        """``(weight1, bias1, weight2, bias2)`` for the fused path in ``dtype``.

        ``onednn``: weights packed in oneDNN's layout, else plain ``(out, in)`` for BLAS.
        """
        params = mlp_params(pwconv1, pwconv2, gamma)
        key, weights = self.cached(params, (dtype, onednn))
        if weights is not None:
            return weights
        with torch.no_grad():
            weight2, bias2 = folded_second_layer(pwconv2, gamma)
            weights = tuple(t.to(dtype).contiguous()
                            for t in (pwconv1.weight, pwconv1.bias, weight2, bias2))
            if onednn:  # oneDNN's blocked layout, once, instead of a reorder inside every call
                weights = (torch.ops.mkldnn._reorder_linear_weight(weights[0]), weights[1],
                           torch.ops.mkldnn._reorder_linear_weight(weights[2]), weights[3])
        self.keep(key, params, weights)
        return weights


def mlp_params(pwconv1: torch.nn.Linear, pwconv2: torch.nn.Linear,
               gamma: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    """The parameters the block MLP's cached weights are derived from."""
    return (pwconv1.weight, pwconv1.bias, pwconv2.weight, pwconv2.bias, gamma)


def folded_second_layer(pwconv2: torch.nn.Linear, gamma: Optional[torch.Tensor]
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``pwconv2``'s weight and bias with the layer scale folded in (in float32 when there is
    one): ``gamma * (g @ W2.T + b2) == g @ (gamma * W2).T + gamma * b2``."""
    weight, bias = pwconv2.weight, pwconv2.bias
    if gamma is None:
        return weight, bias
    return weight.float() * gamma.float()[:, None], bias.float() * gamma.float()


class ColumnHalves(ParameterCache):
    """The fused path's second layer (``gamma`` folded in) as two halves of its output columns,
    packed for oneDNN in one dtype, kept like :class:`InferenceWeights` (see
    :mod:`.column_split`; built only for blocks whose shapes run the halves)."""

    def get(self, pwconv2: torch.nn.Linear, gamma: Optional[torch.Tensor],
            dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
        """``(weight_a, bias_a, weight_b, bias_b)``: output columns ``[0, C/2)``, ``[C/2, C)``."""
        params = (pwconv2.weight, pwconv2.bias, gamma)
        key, halves = self.cached(params, (dtype,))
        if halves is not None:
            return halves
        with torch.no_grad():
            weight, bias = folded_second_layer(pwconv2, gamma)
            cut = weight.shape[0] // 2
            halves = ()
            for rows in (slice(0, cut), slice(cut, None)):
                halves += (torch.ops.mkldnn._reorder_linear_weight(
                    weight[rows].to(dtype).contiguous()), bias[rows].to(dtype).contiguous())
        self.keep(key, params, halves)
        return halves


class MklPackedWeights(ParameterCache):
    """The BLAS route's two layers (``gamma`` folded in) packed by MKL for one number of rows.

    MKL's matmul packs its weight operand into its own blocked layout in every call; packed once
    (as torch's inductor does for float32 linear layers), full chunks skip that. A pack serves
    exactly the number of rows it was made for, so :func:`fused_mlp` asks for one per block (its
    chunk size) and runs shorter chunks on the plain weights. Kept like :class:`InferenceWeights`
    (about as much memory as the two layers' weights), float32 only.
    """

    def get(self, pwconv1: torch.nn.Linear, pwconv2: torch.nn.Linear,
            gamma: Optional[torch.Tensor], weights: Tuple[torch.Tensor, ...], rows: int
            ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(weight1, weight2)`` of ``weights`` (the layers' plain :class:`InferenceWeights`)
        packed for ``rows`` rows."""
        params = mlp_params(pwconv1, pwconv2, gamma)
        key, packed = self.cached(params, (rows,))
        if packed is not None:
            return packed
        with torch.no_grad():
            packed = tuple(torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)
                           for weight in (weights[0], weights[2]))
        self.keep(key, params, packed)
        return packed

"""cuDNN LSTM through ``jax.experimental.rnn`` on NVIDIA GPUs.

``jax.experimental.rnn.lstm`` wraps cuDNN's fused multi-layer LSTM (forward and backward kernels,
batch-first, per-sequence lengths). It only lowers on CUDA GPUs, and only for the plain LSTM:
PyTorch's gate order ``i, f, g, o``, no peepholes, no projection, no clipping, full gates and
activations, float32. :func:`unsupported_reason` says why a layer cannot take it (None when it
can) and :func:`available` whether a CUDA GPU is there; :func:`layer_unsupported_reason`
combines the two for the kernel registry, so the dispatch
(:func:`seqjax.scan_engine.scan_layer`) runs cuDNN only on a CUDA GPU and falls back to the fused
scan otherwise (always, on CPU).

cuDNN's flat weight layout for one unidirectional layer is
``[W_ih (4H x I), W_hh (4H x H), b_ih (4H), b_hh (4H)]`` (row-major, PyTorch's ``weight_ih_l0``
etc.); :func:`pack_weights` builds it from :class:`~seqjax.LSTMParams` (seqjax stores
transposes and one summed bias, so ``b_hh`` is zero).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import cast

import jax
import jax.numpy as jnp

from seqjax.cells.base import Cell
from seqjax.cells.lstm import LSTM, LSTMParams
from seqjax.scan_engine import ScanOptions
from seqjax.typing import Array, PyTree


@functools.cache
def _rnn_module():
    try:
        from jax.experimental import rnn
    except ImportError:  # pragma: no cover - depends on the jax build
        return None
    return rnn if hasattr(rnn, "lstm") else None


def available() -> bool:
    """True when the default backend is a CUDA GPU and ``jax.experimental.rnn.lstm`` exists.

    Returns:
      Whether cuDNN's LSTM can be called at all (False on CPU and ROCm).
    """
    if _rnn_module() is None or jax.default_backend() != "gpu":
        return False
    try:
        return "cuda" in jax.devices()[0].client.platform_version.lower()
    except Exception:  # pragma: no cover - platform probing is best effort
        return False


def unsupported_reason(
    cell: Cell, *, dtype, reverse: bool, mask_is_lengths: bool, has_mask: bool, remat: bool | int
) -> str | None:
    """Why this layer call cannot use cuDNN (None when it can, GPU availability aside).

    Args:
      cell: the layer's cell definition.
      dtype: dtype of the inputs and carry.
      reverse: whether the layer runs backwards in time.
      mask_is_lengths: the mask came from ``lengths`` (valid prefix per sequence).
      has_mask: a mask was given at all.
      remat: the remat option (cuDNN keeps its own reserve space; remat asks for the scan).

    Returns:
      A short reason, or None.
    """
    if type(cell) is not LSTM:
        return f"cuDNN runs plain LSTMs, not {type(cell).__name__}"
    plain = LSTM(
        hidden_size=cell.hidden_size,
        forget_bias=cell.forget_bias,
        use_bias=cell.use_bias,
        dtype=cell.dtype,
        param_dtype=cell.param_dtype,
        kernel_init=cell.kernel_init,
        recurrent_init=cell.recurrent_init,
    )
    if cell != plain:
        return "cuDNN supports no LSTM options (peephole, CIFG, projection, clip, variants)"
    if jnp.dtype(dtype) != jnp.float32 or jnp.dtype(cell.param_dtype) != jnp.float32:
        return "cuDNN path is float32 only"
    if cell.dtype is not None and jnp.dtype(cell.dtype) != jnp.float32:
        return "bfloat16 compute is not implemented for jax.experimental.rnn.lstm"
    if reverse:
        return "a single reversed direction is not exposed by jax.experimental.rnn"
    if has_mask and not mask_is_lengths:
        return "cuDNN takes sequence lengths, not masks with holes"
    if remat:
        return "remat requested"
    return None


def layer_unsupported_reason(
    cell: Cell, xs: Array, mask: Array | None, *, reverse: bool, options: ScanOptions
) -> str | None:
    """:func:`unsupported_reason` for one layer call, GPU availability included (registry API).

    Args:
      cell: the layer's cell definition.
      xs: its inputs ``[T, *B, I]``.
      mask: its mask or None.
      reverse: direction.
      options: the scan options (``remat``, ``lengths_prefix``).

    Returns:
      A short reason, or None when cuDNN can run the layer here.
    """
    reason = unsupported_reason(
        cell,
        dtype=xs.dtype,
        reverse=reverse,
        mask_is_lengths=options.lengths_prefix,
        has_mask=mask is not None,
        remat=options.remat,
    )
    if reason is None and not available():
        reason = f"no CUDA GPU (default backend: {jax.default_backend()})"
    return reason


def run_layer(
    cell: LSTM,
    params: LSTMParams,
    carry: PyTree,
    xs: Array,
    mask: Array | None,
    *,
    reverse: bool,
    unroll: int,
    options: ScanOptions,
) -> tuple[PyTree, Array]:
    """:func:`lstm_scan` with the registry's signature (forward only; ``unroll`` unused)."""
    del reverse, unroll, options  # layer_unsupported_reason refused the rest
    return lstm_scan(cell, params, carry, xs, mask)


def pack_weights(params: LSTMParams) -> Array:
    """Packs one layer's parameters into cuDNN's flat weight vector.

    Args:
      params: :class:`~seqjax.LSTMParams` of a plain LSTM, ``w_ih [I, 4H]``, ``w_hh [H, 4H]``,
        ``b [4H]`` or None.

    Returns:
      ``[4H*I + 4H*H + 8H]`` float array: ``W_ih, W_hh, b_ih, b_hh`` (``b_hh`` zero).

    Example:
      >>> import jax, seqjax
      >>> from seqjax.kernels.cudnn import pack_weights
      >>> p = seqjax.LSTM(2).init(jax.random.key(0), 3)
      >>> pack_weights(p).shape
      (56,)
    """
    G = params.w_hh.shape[-1]
    b = params.b if params.b is not None else jnp.zeros((G,), params.w_hh.dtype)
    return jnp.concatenate(
        [params.w_ih.T.reshape(-1), params.w_hh.T.reshape(-1), b, jnp.zeros((G,), b.dtype)]
    )


def lstm_scan(
    cell: LSTM, params: LSTMParams, carry: PyTree, xs: Array, mask: Array | None
) -> tuple[PyTree, Array]:
    """Runs a plain LSTM layer over time-major ``xs [T, *B, I]`` with cuDNN.

    Args:
      cell: the LSTM definition (see :func:`unsupported_reason`).
      params: its parameters.
      carry: ``LSTMCarry(h [*B, H], c [*B, H])``.
      xs: ``[T, *B, I]`` float32.
      mask: ``[T, *B]`` prefix mask from ``lengths``, or None.

    Returns:
      ``(final_carry, ys [T, *B, H])``, ys zero at padded steps.
    """
    rnn = _rnn_module()
    if rnn is None:
        raise RuntimeError("cuDNN's LSTM is unavailable: this jax has no jax.experimental.rnn.lstm")
    T, batch_shape, I = xs.shape[0], xs.shape[1:-1], xs.shape[-1]
    H = cell.hidden_size
    B = 1
    for d in batch_shape:
        B *= d
    x = jnp.swapaxes(xs.reshape(T, B, I), 0, 1)  # batch-first for cuDNN
    if mask is None:
        lengths = jnp.full((B,), T, jnp.int32)
    else:
        lengths = jnp.sum(mask.reshape(T, B), axis=0, dtype=jnp.int32)
    h0 = carry.h.reshape(1, B, H)
    c0 = carry.c.reshape(1, B, H)
    # rnn.lstm returns (y, h_n, c_n) (its annotation); pyright loses the type through the
    # functools.partial(custom_vjp, ...) decorator jax applies to it.
    lstm = cast(Callable[..., tuple[Array, Array, Array]], rnn.lstm)
    y, h_n, c_n = lstm(
        x,
        h0,
        c0,
        pack_weights(params),
        lengths,
        input_size=I,
        hidden_size=H,
        num_layers=1,
        dropout=0.0,
        bidirectional=False,
    )
    ys = jnp.swapaxes(y, 0, 1)
    if mask is not None:
        ys = jnp.where(mask.reshape(T, B)[..., None], ys, jnp.zeros((), ys.dtype))
    ys = ys.reshape((T,) + tuple(batch_shape) + (H,))
    new = carry._replace(
        h=h_n.reshape(carry.h.shape).astype(carry.h.dtype),
        c=c_n.reshape(carry.c.shape).astype(carry.c.dtype),
    )
    return new, ys

r"""Porting recurrent models between PyTorch and seqjax.

:func:`from_torch` turns a ``torch.nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` (any ``num_layers``,
``bidirectional``, ``bias``, ``proj_size``) or one of the single-step ``nn.RNNCell``,
``nn.LSTMCell``, ``nn.GRUCell`` into a seqjax cell definition and its parameters, so that

.. code-block:: python

    cell, params = seqjax.interop.from_torch(torch_lstm)
    final, ys = seqjax.scan(cell, params, xs, lengths=lengths)

gives PyTorch's outputs (packed sequences padded back with zeros) and its ``h_n`` / ``c_n``
(through :func:`carry_to_torch`). :func:`to_torch` goes the other way for the cells PyTorch can
represent, and :func:`carry_from_torch` / :func:`carry_to_torch` convert initial and final states
between PyTorch's ``[num_layers * num_directions, *B, H]`` layout and seqjax carries.

torch is imported lazily, inside these functions: importing this module never imports it.

(Over 450 lines with reason: one layout table per cell kind serves both directions, modules and
carries, so import and export cannot drift apart; about half the file is docstrings.)

Structure. One layer becomes the plain cell (:class:`seqjax.SimpleRNN`, :class:`seqjax.LSTM`,
:class:`seqjax.GRU`); ``bidirectional=True`` wraps each layer in :func:`seqjax.bidirectional`;
``num_layers > 1`` stacks the layers with :func:`seqjax.stack` (a stack of bidirectional
layers, exactly PyTorch's layout: layer ``k + 1`` reads the concatenation ``[fwd, bwd]`` of layer
``k``). Parameters of layer ``k`` and direction ``d`` come from PyTorch's ``*_l{k}`` (``d = 0``)
and ``*_l{k}_reverse`` (``d = 1``) tensors; in ``h_n`` they sit at index ``k * D + d``.

Weights (PyTorch stores ``[G*H, I]`` matrices applied as ``W x``; seqjax stores ``[I, G*H]``
applied as ``x @ W``):

- LSTM (gate order ``i, f, g, o`` in both): ``w_ih = weight_ih.T``, ``w_hh = weight_hh.T``,
  ``b = bias_ih + bias_hh``, ``w_proj = weight_hr.T`` (``proj_size``). ``forget_bias`` only
  affects :meth:`seqjax.LSTM.init` and plays no part in an import.
- GRU: PyTorch's GRU is the ``reset_after=True`` form with gate order ``r, z, n``, and its update
  gate is ``z' = 1 - z`` of ours (it keeps the old state, ours admits the candidate). Because
  ``1 - \sigma(a) = \sigma(-a)`` the conversion is exact: the ``z`` blocks of ``w_ih`` and
  ``w_hh`` are negated, and

  .. math::

      b_r = b_{ir} + b_{hr}, \quad b_z = -(b_{iz} + b_{hz}), \quad b_n = b_{in}, \quad
      b_{hn} = b_{hn}\ \text{(kept apart: it sits inside the reset product)}.

- RNN: ``w_ih = weight_ih.T``, ``w_hh = weight_hh.T``, ``b = bias_ih + bias_hh``;
  ``nonlinearity`` becomes ``activation``.

Dtypes: parameters keep the module's floating dtype (``float32 -> jnp.float32``,
``float64 -> jnp.float64``, also ``float16`` and ``bfloat16``) unless ``param_dtype`` is given,
and the cell's ``param_dtype`` is set to match. float64 needs JAX's 64-bit mode.

Dropout. ``nn.LSTM(dropout=p)`` drops the outputs of every layer but the last in training mode
only; the imported :class:`seqjax.Stack` carries the same rate (``stack(dropout=p)``), which
seqjax applies only when :func:`seqjax.scan` is given a ``key``. Without a key (evaluation, as
``module.eval()``) the outputs equal PyTorch's; ``cell.replace(dropout=0.0)`` removes it.
``batch_first`` only changes PyTorch's input layout, not its weights (seqjax's own layout choice is
``seqjax.scan(..., time_major=...)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.cells.base import Cell
from seqjax.cells.gru import GRU, GRUCarry, GRUParams
from seqjax.cells.lstm import LSTM, LSTMCarry, LSTMParams
from seqjax.cells.rnn import SimpleRNN, SimpleRNNCarry, SimpleRNNParams
from seqjax.combinators import (
    Bidirectional,
    BidirectionalCarry,
    BidirectionalParams,
    Stack,
    StackCarry,
    StackParams,
    bidirectional,
    stack,
)
from seqjax.typing import Array, DType, PyTree

__all__ = ["carry_from_torch", "carry_to_torch", "from_torch", "to_torch"]

_SUPPORTED = "torch.nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell or nn.GRUCell"

# The plain-cell hyperparameters of LSTM that PyTorch's nn.LSTM has (anything else differs from
# the default and cannot be exported).
_LSTM_TORCH_DEFAULTS = dict(
    peephole=False,
    coupled=False,
    input_gate=True,
    forget_gate=True,
    output_gate=True,
    input_activation=True,
    output_activation=True,
    full_gate_recurrence=False,
    cell_clip=None,
    layer_norm=False,
)


# -- torch -> seqjax ------------------------------------------------------------------------------
def from_torch(module: Any, *, param_dtype: DType | None = None) -> tuple[Cell, PyTree]:
    r"""Converts a PyTorch recurrent module into a seqjax cell and its parameters.

    See the module docstring for the exact weight mapping. The result reproduces PyTorch:
    ``seqjax.scan(cell, params, xs, lengths=lengths)`` equals ``nn.LSTM`` run on
    ``pack_padded_sequence(xs, lengths, enforce_sorted=False)`` and padded back with zeros, and
    ``carry_to_torch(cell, final)`` equals its ``h_n`` (and ``c_n``).

    Args:
      module: a ``torch.nn.RNN`` (tanh or relu), ``nn.LSTM`` (with or without ``proj_size``) or
        ``nn.GRU`` with any ``num_layers``, ``bidirectional`` and ``bias``; or a single-step
        ``nn.RNNCell``, ``nn.LSTMCell`` or ``nn.GRUCell``. Its weights may live on any device.
      param_dtype: dtype of the returned parameters (and the cell's ``param_dtype``); None keeps
        the module's dtype.

    Returns:
      ``(cell, params)``. ``cell`` is a :class:`seqjax.SimpleRNN`, :class:`seqjax.LSTM` or
      :class:`seqjax.GRU` (``reset_after=True``) for one unidirectional layer, a
      :class:`seqjax.Bidirectional` for one bidirectional layer, and a :class:`seqjax.Stack` of
      those (with the module's ``dropout``) for ``num_layers > 1``. ``params`` is the matching
      NamedTuple pytree of ``jax.Array``\ s, e.g. ``LSTMParams(w_ih [I, 4H], w_hh [R, 4H],
      b [4H], w_proj [H, P])`` for one LSTMP layer.

    Raises:
      TypeError: ``module`` is not one of the supported PyTorch modules, or its parameters are
        not floating point.
      ValueError: the module holds float64 weights (or ``param_dtype`` is float64) while JAX's
        64-bit mode is off.

    Example:
      >>> import torch, jax, jax.numpy as jnp, seqjax
      >>> from seqjax.interop import from_torch, carry_to_torch
      >>> lstm = torch.nn.LSTM(3, 8, num_layers=2, bidirectional=True, batch_first=True)
      >>> cell, params = from_torch(lstm)
      >>> type(cell).__name__, type(cell.layers[0]).__name__
      ('Stack', 'Bidirectional')
      >>> xs = jnp.ones((4, 5, 3))                                  # [B, T, I]
      >>> final, ys = seqjax.scan(cell, params, xs, lengths=jnp.array([5, 3, 1, 2]))
      >>> ys.shape                                                  # like PyTorch's output
      (4, 5, 16)
      >>> h_n, c_n = carry_to_torch(cell, final)                    # torch.Tensor [2*2, 4, 8]
      >>> tuple(h_n.shape)
      (4, 4, 8)
    """
    nn = _torch().nn
    if isinstance(module, (nn.RNNCell, nn.LSTMCell, nn.GRUCell)):
        kind = _cell_kind(module)
        dtype = _resolve_dtype(module, param_dtype)
        cell = _plain_cell(
            kind, module.hidden_size, None, _nonlinearity(module), module.bias, dtype
        )
        params = _layer_params(kind, module, "", dtype)
        return cell, params
    if not isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
        raise TypeError(
            f"from_torch supports {_SUPPORTED}; got {type(module).__module__}."
            f"{type(module).__qualname__}"
        )
    kind = _cell_kind(module)
    dtype = _resolve_dtype(module, param_dtype)
    proj = getattr(module, "proj_size", 0) or None
    layer_cell = _plain_cell(
        kind, module.hidden_size, proj, _nonlinearity(module), module.bias, dtype
    )
    layers, layer_params = [], []
    for k in range(module.num_layers):
        if module.bidirectional:
            layers.append(bidirectional(layer_cell))
            layer_params.append(
                BidirectionalParams(
                    forward=_layer_params(kind, module, f"_l{k}", dtype),
                    backward=_layer_params(kind, module, f"_l{k}_reverse", dtype),
                )
            )
        else:
            layers.append(layer_cell)
            layer_params.append(_layer_params(kind, module, f"_l{k}", dtype))
    if module.num_layers == 1:
        return layers[0], layer_params[0]
    return (stack(layers, dropout=float(module.dropout)), StackParams(layers=tuple(layer_params)))


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dev dependency
        raise ImportError("seqjax.interop needs PyTorch: pip install torch") from e
    return torch


def _cell_kind(module: Any) -> str:
    nn = _torch().nn
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        return "lstm"
    if isinstance(module, (nn.GRU, nn.GRUCell)):
        return "gru"
    return "rnn"


def _nonlinearity(module: Any) -> str:
    return getattr(module, "nonlinearity", "tanh")


def _plain_cell(
    kind: str, hidden: int, proj: int | None, nonlinearity: str, bias: bool, dtype: DType
) -> Cell:
    if kind == "lstm":
        return LSTM(hidden_size=hidden, proj_size=proj, use_bias=bool(bias), param_dtype=dtype)
    if kind == "gru":
        return GRU(hidden_size=hidden, reset_after=True, use_bias=bool(bias), param_dtype=dtype)
    return SimpleRNN(
        hidden_size=hidden, activation=nonlinearity, use_bias=bool(bias), param_dtype=dtype
    )


_TORCH_TO_JNP = {
    "float16": jnp.float16,
    "bfloat16": jnp.bfloat16,
    "float32": jnp.float32,
    "float64": jnp.float64,
}


def _resolve_dtype(module: Any, param_dtype: DType | None) -> DType:
    """The parameters' JAX dtype: ``param_dtype`` or the module's, checked against x64 mode."""
    dtypes = {p.dtype for p in module.parameters()}
    if len(dtypes) != 1:
        raise TypeError(
            f"{type(module).__name__} has parameters of several dtypes "
            f"{sorted(str(d) for d in dtypes)}; convert it with module.float() or "
            "module.double() first"
        )
    (tdt,) = dtypes
    name = str(tdt).removeprefix("torch.")
    if not tdt.is_floating_point or name not in _TORCH_TO_JNP:
        raise TypeError(
            f"{type(module).__name__} parameters must be float16, bfloat16, float32 "
            f"or float64, got {tdt}"
        )
    dtype = jnp.dtype(_TORCH_TO_JNP[name] if param_dtype is None else param_dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"param_dtype must be a floating dtype, got {dtype}")
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(
            f"the parameters would be {dtype} but JAX's 64-bit mode is off, so they would be "
            f"silently truncated to {jax.dtypes.canonicalize_dtype(dtype)}; enable it with "
            "jax.config.update('jax_enable_x64', True) (or inside `with jax.enable_x64(True):`), "
            "or pass param_dtype=jnp.float32"
        )
    return dtype


def _array(tensor: Any, dtype: DType) -> Array:
    """A torch tensor as a ``jax.Array`` of ``dtype`` (via float32/float64 NumPy on the host)."""
    t = tensor.detach().cpu()
    if t.dtype not in (_torch().float32, _torch().float64):
        t = t.float()  # NumPy has no bfloat16; float16/bfloat16 are exact in float32
    return jnp.asarray(t.numpy(), dtype=dtype)


def _layer_params(kind: str, module: Any, suffix: str, dtype: DType) -> PyTree:
    """Parameters of one layer and direction (``suffix`` like ``"_l1_reverse"``)."""

    def get(name):
        return getattr(module, f"{name}{suffix}")

    w_ih = _array(get("weight_ih"), dtype).T  # [I, G*H]
    w_hh = _array(get("weight_hh"), dtype).T  # [R, G*H]
    biases = None  # (bias_ih, bias_hh), both present or both absent
    if module.bias:
        biases = (_array(get("bias_ih"), dtype), _array(get("bias_hh"), dtype))
    if kind == "lstm":
        w_proj = None
        if getattr(module, "proj_size", 0):
            w_proj = _array(get("weight_hr"), dtype).T  # [H, P]
        return LSTMParams(
            w_ih=w_ih, w_hh=w_hh, b=None if biases is None else biases[0] + biases[1], w_proj=w_proj
        )
    if kind == "gru":
        H = module.hidden_size
        flip = jnp.concatenate(
            [jnp.ones((H,), dtype), -jnp.ones((H,), dtype), jnp.ones((H,), dtype)]
        )  # negates the z block
        b = b_hn = None
        if biases is not None:
            b_ih, b_hh = biases
            b = jnp.concatenate(
                [b_ih[:H] + b_hh[:H], -(b_ih[H : 2 * H] + b_hh[H : 2 * H]), b_ih[2 * H :]]
            )
            b_hn = b_hh[2 * H :]
        return GRUParams(w_ih=w_ih * flip, w_hh=w_hh * flip, b=b, b_hn=b_hn)
    return SimpleRNNParams(
        w_ih=w_ih, w_hh=w_hh, b=None if biases is None else biases[0] + biases[1]
    )


# -- structure shared by to_torch and the carry converters ---------------------------------------
_PLAIN_CELLS = (SimpleRNN, LSTM, GRU)  # the cells a PyTorch module's layers can be


class _Layout(NamedTuple):
    """How a seqjax cell maps onto one PyTorch module."""

    kind: str  # "rnn", "lstm" or "gru"
    layer: SimpleRNN | LSTM | GRU  # the plain cell of every layer and direction
    num_layers: int
    bidirectional: bool
    dropout: float


def _torch_signature(cell: SimpleRNN | LSTM | GRU, where: str) -> tuple:
    """What PyTorch can represent of a plain cell; raises ValueError for what it cannot."""
    if isinstance(cell, SimpleRNN):
        return ("rnn", cell.hidden_size, None, cell.activation, cell.use_bias)
    if isinstance(cell, GRU):
        if not cell.reset_after:
            raise ValueError(
                f"{where}: PyTorch's nn.GRU is the reset-after form; a GRU(reset_after=False) "
                "(reset applied before the recurrent matmul) has no PyTorch equivalent"
            )
        return ("gru", cell.hidden_size, None, "tanh", cell.use_bias)
    if isinstance(cell, LSTM):
        extra = {
            k: getattr(cell, k) for k, v in _LSTM_TORCH_DEFAULTS.items() if getattr(cell, k) != v
        }
        if extra:
            raise ValueError(
                f"{where}: PyTorch's nn.LSTM has no equivalent of the LSTM options {extra}; "
                "only hidden_size, proj_size and use_bias can be exported"
            )
        return ("lstm", cell.hidden_size, cell.proj_size, "tanh", cell.use_bias)
    raise TypeError(f"{where}: expected a seqjax SimpleRNN, LSTM or GRU, got {cell!r}")


def _layout(cell: Cell) -> _Layout:
    """Checks that ``cell`` is one PyTorch module's worth of layers and describes it."""
    if not isinstance(cell, Cell):
        raise TypeError(f"expected a seqjax cell, got {type(cell).__name__}")
    dropout = 0.0
    if isinstance(cell, Stack):
        if cell.residual:
            raise ValueError(
                "a Stack(residual=True) has no PyTorch equivalent (nn.LSTM/GRU/RNN "
                "layers have no residual connections)"
            )
        layers, dropout = cell.layers, cell.dropout
    else:
        layers = (cell,)
    bidir = [isinstance(layer, Bidirectional) for layer in layers]
    if any(bidir) and not all(bidir):
        raise ValueError(
            "PyTorch modules are bidirectional in every layer or in none; this "
            f"stack mixes them (bidirectional: {bidir})"
        )
    sigs, plain = [], []
    for k, layer in enumerate(layers):
        # every layer is a Bidirectional or none is (checked above)
        if isinstance(layer, Bidirectional):
            if layer.merge != "concat":
                raise ValueError(
                    f"layer {k}: PyTorch concatenates the two directions; "
                    f"Bidirectional(merge={layer.merge!r}) cannot be exported"
                )
            directions = (layer.forward, layer.backward)
        else:
            directions = (layer,)
        for d, direction in enumerate(directions):
            where = f"layer {k}" + (f" ({('forward', 'backward')[d]})" if bidir[0] else "")
            if not isinstance(direction, _PLAIN_CELLS):
                raise TypeError(
                    f"{where}: expected a seqjax SimpleRNN, LSTM, GRU, or a bidirectional / "
                    f"stack of them, got {type(direction).__name__}"
                )
            sigs.append(_torch_signature(direction, where))
            plain.append(direction)
    if len(set(sigs)) != 1:
        raise ValueError(
            "every layer and direction of a PyTorch module has the same type and "
            f"sizes; got (type, hidden, proj, activation, bias) = {sigs}"
        )
    return _Layout(
        kind=sigs[0][0],
        layer=plain[0],
        num_layers=len(layers),
        bidirectional=bidir[0],
        dropout=float(dropout),
    )


def _directions(cell: Cell, tree: PyTree) -> list[PyTree]:
    """Splits a params or carry tree into PyTorch's order: layer-major, forward then backward."""
    layers = tree.layers if isinstance(cell, Stack) else (tree,)
    out = []
    for t in layers:
        out.extend(
            [t.forward, t.backward]
            if isinstance(t, (BidirectionalParams, BidirectionalCarry))
            else [t]
        )
    return out


# -- seqjax -> torch ------------------------------------------------------------------------------
def to_torch(cell: Cell, params: PyTree, *, batch_first: bool = True) -> Any:
    """Builds the PyTorch module equivalent to a seqjax cell and its parameters.

    The inverse of :func:`from_torch` for what PyTorch can represent: :class:`seqjax.SimpleRNN`,
    :class:`seqjax.LSTM` (``hidden_size``, ``proj_size``, ``use_bias`` only),
    :class:`seqjax.GRU` (``reset_after=True`` only), :func:`seqjax.bidirectional` of one of those
    with ``merge="concat"``, and :func:`seqjax.stack` of identical such layers without
    ``residual``. Summed biases are exported as ``bias_ih = b``, ``bias_hh = 0`` (for the GRU,
    ``bias_hh`` holds ``b_hn`` in its candidate block), which computes the same function. The
    module is in evaluation mode, its dtype that of ``params``; a cell's compute ``dtype`` is not
    exported (PyTorch computes in the parameter dtype).

    Args:
      cell: the seqjax cell definition.
      params: its parameters (e.g. from ``cell.init`` or training).
      batch_first: the module's ``batch_first`` (True matches :func:`seqjax.scan`'s default
        ``[B, T, I]`` layout; PyTorch's own default is False).

    Returns:
      A ``torch.nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` on the CPU.

    Raises:
      TypeError: ``cell`` is not a seqjax cell of the kinds above, or ``params`` do not match it.
      ValueError: the cell uses options PyTorch has no equivalent for (peepholes, CIFG, layer
        norm, classic GRU, residual stacks, mixed layers, ``merge="sum"``, ...).

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.interop import to_torch
      >>> cell = seqjax.stack([seqjax.GRU(6, reset_after=True)] * 2)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> module = to_torch(cell, params)
      >>> module
      GRU(3, 6, num_layers=2, batch_first=True)
    """
    torch = _torch()
    layout = _layout(cell)
    flat = _directions(cell, params)
    expected = {"lstm": LSTMParams, "gru": GRUParams, "rnn": SimpleRNNParams}[layout.kind]
    for p in flat:
        if not isinstance(p, expected):
            raise TypeError(
                f"params do not match the cell: expected {expected.__name__} per "
                f"layer and direction, got {type(p).__name__}"
            )
    leaves = jax.tree_util.tree_leaves(params)
    dtypes = {jnp.dtype(x.dtype) for x in leaves}
    if len(dtypes) != 1:
        raise TypeError(f"params mix dtypes {sorted(map(str, dtypes))}; PyTorch modules have one")
    (dtype,) = dtypes
    tdtype = getattr(torch, str(dtype))
    layer = layout.layer
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[layout.kind]
    kwargs: dict[str, Any] = dict(
        input_size=int(flat[0].w_ih.shape[0]),
        hidden_size=layer.hidden_size,
        num_layers=layout.num_layers,
        bias=layer.use_bias,
        batch_first=batch_first,
        dropout=layout.dropout if layout.num_layers > 1 else 0.0,
        bidirectional=layout.bidirectional,
        dtype=tdtype,
    )
    # layout.kind is "lstm" exactly for an LSTM layer, "rnn" for a SimpleRNN
    if isinstance(layer, LSTM) and layer.proj_size is not None:
        kwargs["proj_size"] = layer.proj_size
    if isinstance(layer, SimpleRNN):
        kwargs["nonlinearity"] = layer.activation
    module = cls(**kwargs)
    D = 2 if layout.bidirectional else 1
    with torch.no_grad():
        for idx, p in enumerate(flat):
            suffix = f"_l{idx // D}" + ("_reverse" if idx % D else "")
            for name, value in _torch_tensors(layout.kind, layer.hidden_size, p).items():
                target = getattr(module, name + suffix)
                if tuple(target.shape) != tuple(value.shape):
                    raise TypeError(
                        f"params do not match the cell: {name}{suffix} should have "
                        f"shape {tuple(target.shape)}, got {tuple(value.shape)}"
                    )
                target.copy_(_tensor(value, tdtype))
    return module.eval()


def _torch_tensors(kind: str, H: int, p: PyTree) -> dict[str, Array]:
    """PyTorch's tensors (names without layer suffix) for one layer and direction."""
    out = {}
    if kind == "gru":
        flip = jnp.concatenate(
            [
                jnp.ones((H,), p.w_ih.dtype),
                -jnp.ones((H,), p.w_ih.dtype),
                jnp.ones((H,), p.w_ih.dtype),
            ]
        )
        out["weight_ih"], out["weight_hh"] = (p.w_ih * flip).T, (p.w_hh * flip).T
        if p.b is not None:
            out["bias_ih"] = p.b * flip
            zeros = jnp.zeros((2 * H,), p.b.dtype)
            b_hn = p.b_hn if p.b_hn is not None else jnp.zeros((H,), p.b.dtype)
            out["bias_hh"] = jnp.concatenate([zeros, b_hn])
        return out
    out["weight_ih"], out["weight_hh"] = p.w_ih.T, p.w_hh.T
    if p.b is not None:
        out["bias_ih"], out["bias_hh"] = p.b, jnp.zeros_like(p.b)
    if kind == "lstm" and p.w_proj is not None:
        out["weight_hr"] = p.w_proj.T
    return out


def _tensor(x: Any, tdtype: Any) -> Any:
    """A JAX/NumPy array (or torch tensor) as a CPU torch tensor of ``tdtype``."""
    torch = _torch()
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=tdtype)
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)  # torch.from_numpy has no bfloat16; widening is exact
    return torch.from_numpy(np.array(a)).to(tdtype)


# -- states ---------------------------------------------------------------------------------------
def carry_to_torch(cell: Cell, carry: PyTree) -> Any:
    """A seqjax carry as PyTorch's ``h_n`` (RNN, GRU) or ``(h_n, c_n)`` (LSTM).

    PyTorch stacks the states of all layers and directions on a leading axis, layer-major with
    the forward direction first: entry ``k * D + d`` is layer ``k``, direction ``d``. For a
    bidirectional layer the backward direction's state is the one after it reached the first
    step, as in PyTorch.

    Args:
      cell: a cell PyTorch can represent (see :func:`to_torch`), e.g. from :func:`from_torch`.
      carry: its carry, leaves ``[*B, n]`` (e.g. the final carry of :func:`seqjax.scan`).

    Returns:
      ``h_n`` of shape ``[num_layers * D, *B, R]`` as a CPU ``torch.Tensor`` of the carry's dtype,
      and for an LSTM also ``c_n [num_layers * D, *B, H]`` (``R = P`` with ``proj_size``).

    Raises:
      TypeError: ``cell`` is not representable in PyTorch, or ``carry`` does not fit it.
      ValueError: the cell uses options PyTorch has no equivalent for.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.interop import carry_to_torch
      >>> cell = seqjax.bidirectional(seqjax.GRU(4, reset_after=True))
      >>> final = cell.initial_carry((2,))
      >>> tuple(carry_to_torch(cell, final).shape)
      (2, 2, 4)
    """
    torch = _torch()
    layout = _layout(cell)
    flat = _directions(cell, carry)
    expected = {"lstm": LSTMCarry, "gru": GRUCarry, "rnn": SimpleRNNCarry}[layout.kind]
    for c in flat:
        if not isinstance(c, expected):
            raise TypeError(
                f"carry does not match the cell: expected {expected.__name__} per "
                f"layer and direction, got {type(c).__name__}"
            )

    def stacked(field):
        arr = jnp.stack([getattr(c, field) for c in flat])
        return _tensor(
            arr, getattr(torch, str(arr.dtype)) if arr.dtype != jnp.bfloat16 else torch.bfloat16
        )

    if layout.kind == "lstm":
        return stacked("h"), stacked("c")
    return stacked("h")


def carry_from_torch(cell: Cell, h_0: Any, c_0: Any = None) -> PyTree:
    """PyTorch's initial state ``h_0`` (and ``c_0`` for an LSTM) as a seqjax carry for ``cell``.

    The inverse of :func:`carry_to_torch`; pass the result as ``seqjax.scan(..., carry=...)`` to
    start from the same state as ``module(x, h_0)`` or ``module(x, (h_0, c_0))``.

    Args:
      cell: a cell PyTorch can represent, e.g. from :func:`from_torch`.
      h_0: ``[num_layers * D, *B, R]`` torch tensor or array (``R = P`` with ``proj_size``).
      c_0: ``[num_layers * D, *B, H]``, required for an LSTM and rejected otherwise.

    Returns:
      The carry pytree (``LSTMCarry``, ``GRUCarry``, ``SimpleRNNCarry``, or their
      ``BidirectionalCarry`` / ``StackCarry`` compositions) with ``jax.Array`` leaves of the
      input's dtype.

    Raises:
      TypeError: ``cell`` is not representable in PyTorch.
      ValueError: a missing or unexpected ``c_0``, or states whose shapes do not fit the cell.

    Example:
      >>> import torch, seqjax
      >>> from seqjax.interop import carry_from_torch
      >>> cell = seqjax.stack([seqjax.LSTM(4)] * 2)
      >>> carry = carry_from_torch(cell, torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
      >>> carry.layers[1].c.shape
      (3, 4)
    """
    layout = _layout(cell)
    D = 2 if layout.bidirectional else 1
    n = layout.num_layers * D
    layer = layout.layer
    if layout.kind == "lstm":
        if c_0 is None:
            raise ValueError("an LSTM state needs both h_0 and c_0")
    elif c_0 is not None:
        raise ValueError(f"c_0 is only for LSTMs; this cell is a {layout.kind.upper()}")

    def to_array(name, x, size):
        if hasattr(x, "detach"):
            t = x.detach().cpu()
            x = (
                t.float().numpy()
                if str(t.dtype) in ("torch.float16", "torch.bfloat16")
                else t.numpy()
            )
        a = jnp.asarray(x)
        if a.ndim < 2 or a.shape[0] != n or a.shape[-1] != size:
            raise ValueError(
                f"{name} must have shape [num_layers * num_directions = {n}, *B, "
                f"{size}], got {tuple(a.shape)}"
            )
        return a

    h = to_array("h_0", h_0, layer.output_size)
    if layout.kind == "lstm":
        c = to_array("c_0", c_0, layer.hidden_size)
        if c.shape[1:-1] != h.shape[1:-1]:
            raise ValueError(
                f"h_0 and c_0 have different batch shapes {h.shape[1:-1]} and {c.shape[1:-1]}"
            )
        flat = [LSTMCarry(h=h[i], c=c[i]) for i in range(n)]
    elif layout.kind == "gru":
        flat = [GRUCarry(h=h[i]) for i in range(n)]
    else:
        flat = [SimpleRNNCarry(h=h[i]) for i in range(n)]
    layers = [
        BidirectionalCarry(forward=flat[2 * k], backward=flat[2 * k + 1]) if D == 2 else flat[k]
        for k in range(layout.num_layers)
    ]
    if isinstance(cell, Stack):
        return StackCarry(layers=tuple(layers))
    return layers[0]

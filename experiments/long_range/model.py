"""The model of the long-lag tasks: a cell with a linear readout, sized to a parameter budget."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import seqjax
from experiments.long_range.config import EXTRA_CELLS, canonical_cell
from experiments.long_range.formal import FORMAL_TASKS
from experiments.long_range.input_pipeline import COPY_IN, io_sizes
from experiments.scaffold import UsageError
from seqjax.cells.base import glorot_uniform, orthogonal


@dataclasses.dataclass(frozen=True)
class ScaledInit:
    """An initializer times a constant; hashable by value, so equal cells share compilations.

    Attributes:
      init: the base initializer ``(key, shape, dtype) -> array``.
      scale: the multiplier.
    """

    init: Callable[..., jax.Array]
    scale: float

    def __call__(self, key, shape, dtype=jnp.float32):
        return self.init(key, shape, dtype) * jnp.asarray(self.scale, dtype)


def make_cell(
    name: str, hidden: int, *, forget_bias: float = 1.0, init_scale: float = 1.0
) -> seqjax.Cell:
    """Builds the cell definition of an experiment.

    Args:
      name: a cell name (see :func:`canonical_cell`).
      hidden: hidden size ``H``.
      forget_bias: initial forget-gate bias (LSTM family only).
      init_scale: multiplies the default input and recurrent initial weights (not used by
        the cells of :data:`~experiments.long_range.config.EXTRA_CELLS`, which keep their
        defaults).

    Returns:
      A seqjax cell.

    Example:
      >>> make_cell("cifg", 8).coupled
      True
    """
    name = canonical_cell(name)
    if name in EXTRA_CELLS:
        return EXTRA_CELLS[name](hidden)
    kw: dict[str, Any] = {}
    if init_scale != 1.0:
        kw = dict(
            kernel_init=ScaledInit(glorot_uniform, init_scale),
            recurrent_init=ScaledInit(orthogonal, init_scale),
        )
    if name == "rnn":
        return seqjax.SimpleRNN(hidden_size=hidden, **kw)
    if name == "gru":
        return seqjax.GRU(hidden_size=hidden, **kw)
    if name == "lstm":
        return seqjax.LSTM(hidden_size=hidden, forget_bias=forget_bias, **kw)
    return seqjax.LSTM.variant(name, hidden, forget_bias=forget_bias, **kw)


def param_count(cell: seqjax.Cell, input_size: int, output_size: int) -> int:
    """Parameters of the cell plus a linear readout ``[H, O] + [O]`` (shapes only, no FLOPs)."""
    shapes = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    n = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
    return n + cell.output_size * output_size + output_size


def hidden_for_budget(name: str, task: str, budget: int) -> int:
    """Largest hidden size whose model (cell + readout) has at most ``budget`` parameters.

    Args:
      name: cell name.
      task: ``"adding"`` or ``"copy"`` (sets input and output sizes).
      budget: parameter budget.

    Returns:
      ``H >= 1``.

    Raises:
      UsageError: (a ValueError) not even ``H = 1`` fits.

    Example:
      >>> hidden_for_budget("lstm", "adding", 4700)
      32
    """
    i, o = io_sizes(task)
    if param_count(make_cell(name, 1), i, o) > budget:
        raise UsageError(
            f"--budget: expected at least {param_count(make_cell(name, 1), i, o)} parameters "
            f"(a {name} cell with H = 1 on {task}), got {budget}"
        )
    lo, hi = 1, 2
    while param_count(make_cell(name, hi), i, o) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if param_count(make_cell(name, mid), i, o) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


class Model(NamedTuple):
    """A cell with a linear readout: static definition, parameters built by :meth:`init`."""

    cell: seqjax.Cell
    task: str

    def init(self, key: jax.Array) -> dict[str, Any]:
        i, o = io_sizes(self.task)
        k_cell, k_out = jax.random.split(key)
        H = self.cell.output_size
        w = jax.random.normal(k_out, (H, o), jnp.float32) / jnp.sqrt(jnp.float32(H))
        return {
            "cell": self.cell.init(k_cell, i),
            "readout": {"w": w, "b": jnp.zeros((o,), jnp.float32)},
        }

    def features(self, inputs: jax.Array) -> jax.Array:
        if self.task == "adding":
            return inputs
        return jax.nn.one_hot(inputs, COPY_IN, dtype=jnp.float32)

    def _apply_formal(self, params, inputs) -> jax.Array:
        """Logits ``[B, classes]`` from the output at each sequence's last valid step."""
        tokens, lengths = inputs
        xs = jax.nn.one_hot(tokens, io_sizes(self.task)[0], dtype=jnp.float32)
        _, ys = seqjax.scan(self.cell, params["cell"], xs, lengths=lengths)
        last = jnp.take_along_axis(ys, (lengths - 1)[:, None, None], axis=1)[:, 0]
        return last @ params["readout"]["w"] + params["readout"]["b"]

    def apply(self, params, inputs: jax.Array, carry_hook=None) -> jax.Array:
        """Predictions: adding ``[B]``, copy logits ``[B, L, 9]``, parity/modarith logits
        ``[B, classes]`` (``inputs = (tokens, lengths)``; ``carry_hook`` unsupported)."""
        if self.task in FORMAL_TASKS:
            return self._apply_formal(params, inputs)
        xs = self.features(inputs)
        if carry_hook is None:
            _, ys = seqjax.scan(self.cell, params["cell"], xs)
        else:
            ys = carry_hook(self.cell, params["cell"], xs)
        r = params["readout"]
        if self.task == "adding":
            return (ys[:, -1] @ r["w"] + r["b"])[:, 0]
        return ys @ r["w"] + r["b"]

    def loss(self, params, inputs, targets, carry_hook=None) -> jax.Array:
        out = self.apply(params, inputs, carry_hook)
        if self.task == "adding":
            return jnp.mean(jnp.square(out - targets))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, targets))

    def metrics(self, params, inputs, targets) -> dict[str, jax.Array]:
        out = self.apply(params, inputs)
        if self.task == "adding":
            return {"test_mse": jnp.mean(jnp.square(out - targets))}
        if self.task in FORMAL_TASKS:
            xent = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, targets))
            acc = jnp.mean(jnp.argmax(out, -1) == targets).astype(jnp.float32)
            return {"test_xent": xent, "accuracy": acc}
        K = 10
        xent = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, targets))
        acc = jnp.mean(jnp.argmax(out[:, -K:], -1) == targets[:, -K:])
        return {"test_xent": xent, "recall_accuracy": acc.astype(jnp.float32)}

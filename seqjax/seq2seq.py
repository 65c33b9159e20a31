"""Encoder-decoder plumbing: the decoder's initial state from the encoder's final state.

An encoder is any seqjax cell run over the source with :func:`seqjax.scan` and ``lengths``:
deep (:func:`seqjax.stack`), bidirectional (:func:`seqjax.bidirectional`) or both. Its outputs
are the attention memory and its final carry seeds the decoder through a :class:`Bridge`:

- layer ``k`` of the decoder starts from layer ``k`` of the encoder when both have the same
  number of layers, otherwise every decoder layer starts from the encoder's top layer;
- a bidirectional encoder layer's state is its two directions' final states concatenated
  feature-wise (``h = [h_fwd; h_bwd]``, ``c = [c_fwd; c_bwd]``; the backward direction's final
  state is the one after reading the first source token);
- a decoder layer whose carry has exactly the same structure and sizes as that state is copied;
  otherwise each of its carry leaves is ``tanh(s W + b)`` of the state's leaves concatenated,
  ``s = [h_fwd; h_bwd; c_fwd; c_bwd]`` for a bidirectional LSTM layer (the "bridge layer", e.g.
  Bahdanau et al.'s ``s_0 = tanh(W h)``).

Put together (the example runs as a doctest):

>>> import jax, jax.numpy as jnp, seqjax
>>> from seqjax.attention_decoder import AttentionDecoder
>>> from seqjax.seq2seq import Bridge
>>> from seqjax.decode import beam_search, make_step_fn, tile_beams
>>> enc = seqjax.stack([seqjax.bidirectional(seqjax.LSTM(4))] * 2)
>>> dec = AttentionDecoder(seqjax.stack([seqjax.LSTM(8)] * 2), memory_size=8)
>>> bridge = Bridge(enc, dec)
>>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
>>> p_enc, p_dec, p_bridge = enc.init(k1, 3), dec.init(k2, 5), bridge.init(k3)
>>> src, src_len = jnp.ones((2, 6, 3)), jnp.array([6, 4])          # [B, S, I_src]
>>> final, memory = seqjax.scan(enc, p_enc, src, lengths=src_len)  # memory [B, S, 8]
>>> carry = bridge(p_bridge, final)                                 # copied: 2 * 4 == 8
>>> _, ys = seqjax.scan(dec, dec.bind(p_dec, memory, src_len), jnp.ones((2, 7, 5)), carry=carry)
>>> ys.shape                                                        # teacher forcing
(2, 7, 8)
>>> K = 3                                                           # beam search
>>> bound = dec.bind(p_dec, tile_beams(memory, K), tile_beams(src_len, K))
>>> step = make_step_fn(dec, bound, jnp.ones((10, 5)), jnp.ones((8, 10)))
>>> out = beam_search(step, carry, jnp.array([1, 1]), beam_size=K, max_length=4, eos_id=2)
>>> out.tokens.shape
(2, 3, 4)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.attention_decoder import AttentionDecoder
from seqjax.cells.base import Cell, glorot_uniform
from seqjax.combinators import Bidirectional, BidirectionalCarry, Stack, StackCarry
from seqjax.typing import PRNGKey, PyTree

__all__ = ["Bridge", "BridgeParams", "DenseParams", "layer_states"]

MODES = ("auto", "dense", "zeros")


class DenseParams(NamedTuple):
    """One bridge projection ``tanh(s @ w + b)``: ``w [N_enc, n]``, ``b [n]``."""

    w: jax.Array
    b: jax.Array


class BridgeParams(NamedTuple):
    """Parameters of :class:`Bridge`.

    Attributes:
      layers: one entry per decoder layer, bottom first: None when that layer copies the
        encoder state, else a tuple of :class:`DenseParams`, one per leaf of the layer's carry
        (in ``jax.tree_util`` order, e.g. ``(h, c)`` for an LSTM).
    """

    layers: tuple


def _layers(cell: Cell) -> tuple[Cell, ...]:
    return cell.layers if isinstance(cell, Stack) else (cell,)


def _merge(cell: Cell, carry: PyTree) -> PyTree:
    """A layer's final state; a bidirectional one's directions concatenated feature-wise."""
    if not isinstance(cell, Bidirectional):
        return carry
    fwd, bwd = carry.forward, carry.backward
    if jax.tree_util.tree_structure(fwd) == jax.tree_util.tree_structure(bwd):
        return jax.tree_util.tree_map(lambda f, b: jnp.concatenate([f, b], axis=-1), fwd, bwd)
    return BidirectionalCarry(fwd, bwd)  # different direction cells: only dense bridging


def layer_states(encoder: Cell, final_carry: PyTree) -> tuple[PyTree, ...]:
    """The encoder's final state per layer, bottom first, bidirectional layers merged.

    Args:
      encoder: the encoder cell (a stack is split into its layers).
      final_carry: the carry :func:`seqjax.scan` returned for it, leaves ``[*B, n]``.

    Returns:
      A tuple with one carry per layer; a bidirectional layer gives its directions' carries
      concatenated leaf by leaf (``LSTMCarry(h=[*B, 2H], c=[*B, 2H])``).

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.seq2seq import layer_states
      >>> enc = seqjax.bidirectional(seqjax.GRU(3))
      >>> final, _ = seqjax.scan(enc, enc.init(jax.random.key(0), 2), jnp.ones((4, 5, 2)))
      >>> layer_states(enc, final)[0].h.shape
      (4, 6)
    """
    if isinstance(encoder, Stack):
        if not isinstance(final_carry, StackCarry):
            raise TypeError(f"a Stack's carry is a StackCarry, got {type(final_carry).__name__}")
        carries = final_carry.layers
    else:
        carries = (final_carry,)
    return tuple(_merge(c, k) for c, k in zip(_layers(encoder), carries, strict=True))


def _shapes(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)


@dataclasses.dataclass(frozen=True)
class Bridge:
    """Maps an encoder's final carry to a decoder's initial carry (see the module docstring).

    Attributes:
      encoder: the encoder cell (any cell or stack, bidirectional layers included).
      decoder: the decoder cell, or an :class:`~seqjax.attention_decoder.AttentionDecoder`
        (its wrapped cell is bridged; its fed-back output starts at zeros, except in Bahdanau
        style where the first query is the bridged top layer's ``h``).
      mode: ``"auto"`` (copy a layer when sizes match, else ``tanh`` dense), ``"dense"`` (always
        the dense layer) or ``"zeros"`` (no bridge: the decoder starts from zeros).
    """

    encoder: Cell
    decoder: Cell
    mode: str = "auto"

    def __post_init__(self):
        for name in ("encoder", "decoder"):
            if not isinstance(getattr(self, name), Cell):
                raise TypeError(
                    f"Bridge.{name} must be a seqjax cell, got {type(getattr(self, name)).__name__}"
                )
        _checks.one_of("Bridge.mode", self.mode, MODES)

    @property
    def _target(self) -> Cell:
        return self.decoder.cell if isinstance(self.decoder, AttentionDecoder) else self.decoder

    def _plan(self) -> list[tuple[int, PyTree, PyTree, bool]]:
        """Per decoder layer: (encoder layer index, encoder state shapes, target shapes, copy)."""
        enc_states = jax.eval_shape(
            lambda: layer_states(self.encoder, self.encoder.initial_carry(()))
        )
        targets = _layers(self._target)
        plan = []
        for k, layer in enumerate(targets):
            src = k if len(targets) == len(enc_states) else len(enc_states) - 1
            want = jax.eval_shape(lambda layer=layer: layer.initial_carry(()))
            same = jax.tree_util.tree_structure(enc_states[src]) == jax.tree_util.tree_structure(
                want
            ) and _shapes(enc_states[src]) == _shapes(want)
            plan.append((src, enc_states[src], want, self.mode == "auto" and same))
        return plan

    def init(self, key: PRNGKey) -> BridgeParams:
        """Creates the dense layers that are needed (Glorot-uniform weights, zero biases).

        Args:
          key: a ``jax.random`` key.

        Returns:
          :class:`BridgeParams` (``layers`` of Nones when every layer is copied).
        """
        if self.mode == "zeros":
            return BridgeParams(layers=())
        layers = []
        for k, (_, state, want, copy) in enumerate(self._plan()):
            if copy:
                layers.append(None)
                continue
            n_in = sum(leaf.shape[-1] for leaf in jax.tree_util.tree_leaves(state))
            keys = jax.random.split(
                jax.random.fold_in(key, k), len(jax.tree_util.tree_leaves(want))
            )
            layers.append(
                tuple(
                    DenseParams(
                        glorot_uniform(kk, (n_in, leaf.shape[-1]), jnp.float32),
                        jnp.zeros((leaf.shape[-1],), jnp.float32),
                    )
                    for kk, leaf in zip(keys, jax.tree_util.tree_leaves(want), strict=True)
                )
            )
        return BridgeParams(layers=tuple(layers))

    def __call__(self, params: BridgeParams, final_carry: PyTree) -> PyTree:
        """The decoder's initial carry.

        Args:
          params: from :meth:`init`.
          final_carry: the encoder's final carry from :func:`seqjax.scan`, leaves ``[*B, n]``.

        Returns:
          The decoder's carry (an :class:`~seqjax.attention_decoder.AttentionDecoderCarry` for an
          attentional decoder), leaves ``[*B, n]`` in the encoder carry's dtype.

        Raises:
          ValueError: parameters that do not fit this bridge.
        """
        leaf0 = jax.tree_util.tree_leaves(final_carry)[0]
        batch, dtype = tuple(leaf0.shape[:-1]), leaf0.dtype
        if self.mode == "zeros":
            cell_carry = self._target.initial_carry(batch, dtype)
        else:
            states = layer_states(self.encoder, final_carry)
            plan = self._plan()
            if len(params.layers) != len(plan):
                raise ValueError(
                    f"bridge parameters have {len(params.layers)} layers, this bridge needs "
                    f"{len(plan)}"
                )
            new = []
            for (src, _, want, copy), p in zip(plan, params.layers, strict=True):
                state = states[src]
                if copy:
                    new.append(state)
                    continue
                s = jnp.concatenate(jax.tree_util.tree_leaves(state), axis=-1)
                leaves = [jnp.tanh(s @ d.w.astype(s.dtype) + d.b.astype(s.dtype)) for d in p]
                new.append(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(want), leaves))
            if isinstance(self._target, Stack):
                cell_carry = StackCarry(layers=tuple(new))
            else:
                cell_carry = new[0]
        if not isinstance(self.decoder, AttentionDecoder):
            return cell_carry
        output = None
        if self.decoder.style == "bahdanau" and self.mode != "zeros":
            top = cell_carry.layers[-1] if isinstance(cell_carry, StackCarry) else cell_carry
            h = getattr(top, "h", None)
            if h is not None and h.shape[-1] == self.decoder.cell.output_size:
                output = h
        return self.decoder.start(cell_carry, output)

"""Checks that parameters are the ones a cell's own ``init`` would produce.

A cell given another cell's parameters can run without error and compute something else: an
LSTM without peepholes ignores ``w_peephole``, a classic GRU runs on the parameters of a
``reset_after`` GRU. :func:`check_params` compares ``params`` with
``jax.eval_shape(lambda: cell.init(key, input_size))`` (the input size read from ``params``),
field by field and through combinators, and raises naming the first difference:

- another cell's parameter type (``GRU(hidden_size=4) got LSTMParams; expected GRUParams``);
- a field the cell does not use, or a field it needs that is absent, with the hyperparameter
  that would explain it (``... w_peephole, which this cell does not use: was it created with
  peephole=True?``);
- a leaf of the wrong shape, located in the composition (``layer 1 of Stack: w_hh has shape
  (64, 256), expected (32, 128)``).

It works for every cell that follows the contract (``init`` and ``input_size_of``), future ones
included, since the reference is the cell's own ``init``. Everything it reads is static
(pytree structure and shapes), so it runs while tracing and adds nothing to a compiled
function; results are cached by ``(cell, structure, shapes)``, so a cell stepped in a Python
loop pays one dictionary look-up per call. Dtypes are not compared: casting parameters (to
bfloat16, say) is legitimate. Fields that ``init`` leaves None and a later call fills (an
attention memory bound into the parameters) are listed by the parameter NamedTuple in a class
attribute ``runtime_fields`` and not compared.

(About 500 lines, over the usual 450: the comparison and the code that turns a difference into
a located, explained message only make sense together.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

__all__ = ["RUNTIME_FIELDS", "check_params", "check_step", "describe"]

#: Name of the class attribute of a parameter NamedTuple listing fields that ``init`` leaves
#: None and that are filled later (e.g. ``runtime_fields = ("memory",)`` for a memory bound
#: into an attention decoder's parameters). :func:`check_params` does not compare them.
RUNTIME_FIELDS = "runtime_fields"
# Verified (cell or id(cell), treedef, shapes) keys, and reference parameter shapes by
# (cell, input_size).
# Both are bounded: a long-lived process that builds many cells must not grow without limit.
_VERIFIED: dict[Any, None] = {}
_EXPECTED: dict[Any, Any] = {}
_CACHE_LIMIT = 2048


def check_params(cell: Any, params: Any) -> None:
    """Raises unless ``params`` have the structure and shapes ``cell.init`` would produce.

    Args:
      cell: a seqjax cell or combinator.
      params: the parameters given to it.

    Raises:
      TypeError: ``params`` (or a part of them) is another cell's parameter type or not a
        parameter pytree at all.
      ValueError: a field present that the cell does not use, a field it needs missing, a
        different number of layers, or a leaf whose shape differs from ``init``'s.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    shapes = (treedef, tuple(_shape(leaf) for leaf in leaves))
    # Identity first (hashing a deep composition's fields costs more than the rest), then
    # equality, so that a definition rebuilt on every trace is still found.
    by_id = (id(cell),) + shapes
    if _VERIFIED.get(by_id) is cell:
        return
    key: Any = (cell,) + shapes
    try:
        if key in _VERIFIED:
            _remember(_VERIFIED, by_id, cell)
            return
    except TypeError:  # an unhashable hyperparameter: check every time, cache by value nothing
        key = None
    _verify(cell, params)
    # Storing the cell keeps it alive, so its id cannot be reused while the entry exists.
    _remember(_VERIFIED, by_id, cell)
    if key is not None:
        _remember(_VERIFIED, key, cell)


def check_step(cell: Any, params: Any, carry: Any, x: Any) -> None:
    """Checks of a one-step call ``cell(params, carry, x)`` that need the cell's contract.

    Runs :func:`check_params`, then recognises a whole sequence given to a one-step call (``x``
    with one more leading axis than the carry's batch shape), which would otherwise be reported
    as a carry of the wrong shape.

    Args:
      cell: the cell being stepped.
      params: its parameters.
      carry: the carry given.
      x: the input given, ``[*B, I]`` expected.

    Raises:
      TypeError, ValueError: see :func:`check_params`; ValueError for a sequence ``[*B, T, I]``.
    """
    check_params(cell, params)
    x_shape = _shape(x)
    if len(x_shape) < 2:
        return
    leaves = jax.tree_util.tree_leaves(carry)
    if leaves and _shape(leaves[0])[: len(x_shape) - 1] == x_shape[:-1]:
        return  # the carry's batch dimensions are x's: the usual case, decided cheaply
    batch = _carry_batch_shape(cell, carry)
    if batch is not None and len(x_shape) == len(batch) + 2 and x_shape[:-2] == batch:
        raise ValueError(
            f"x has shape {x_shape} ({len(x_shape)} dims) but the carry's batch shape is "
            f"{batch}: a whole sequence [*B, T, I]? A one-step call takes x [*B, I]; run a "
            "sequence with seqjax.scan(cell, params, xs)"
        )


def _carry_batch_shape(cell: Any, carry: Any) -> tuple[int, ...] | None:
    """The batch shape of ``carry``, or None if it does not look like ``cell``'s carry."""
    key = ("carry", cell)
    try:
        unbatched = _EXPECTED.get(key)
    except TypeError:
        key, unbatched = None, None
    if unbatched is None:
        try:
            unbatched = jax.eval_shape(lambda: cell.initial_carry(()))
        except Exception:  # noqa: BLE001 - no reference: leave the carry check to the cell
            return None
        if key is not None:
            _remember(_EXPECTED, key, unbatched)
    exp_leaves, exp_def = jax.tree_util.tree_flatten(unbatched)
    got_leaves, got_def = jax.tree_util.tree_flatten(carry)
    if exp_def != got_def or not exp_leaves:
        return None
    g, e = _shape(got_leaves[0]), tuple(exp_leaves[0].shape)
    if len(g) < len(e) or g[len(g) - len(e) :] != e:
        return None
    return g[: len(g) - len(e)]


def describe(cell: Any) -> str:
    """``ClassName(field=value, ...)`` listing only the hyperparameters that differ from their
    defaults (nested cells described the same way), for error messages."""
    if not dataclasses.is_dataclass(cell) or isinstance(cell, type):
        return repr(cell)
    parts = []
    for f in dataclasses.fields(cell):
        if not f.init:
            continue
        value = getattr(cell, f.name)
        if f.default is not dataclasses.MISSING and _same(value, f.default):
            continue
        parts.append(f"{f.name}={_describe_value(value)}")
    return f"{type(cell).__name__}({', '.join(parts)})"


# -- verification -----------------------------------------------------------------------------
class _Mismatch(Exception):
    def __init__(self, exc_type: type[Exception], path: tuple, text: str):
        super().__init__(text)
        self.exc_type, self.path, self.text = exc_type, path, text


def _verify(cell: Any, params: Any) -> None:
    input_size = _input_size(cell, params)
    try:
        expected = _expected(cell, 1 if input_size is None else input_size)
    except Exception:  # noqa: BLE001 - no reference to compare with; the cell raises its own
        return
    try:
        _compare(expected, params, (), shapes=input_size is not None)
    except _Mismatch as m:
        raise m.exc_type(_message(cell, params, m)) from None


def _input_size(cell: Any, params: Any) -> int | None:
    """The input size ``params`` were made for, or None if ``params`` are not readable."""
    try:
        n = cell.input_size_of(params)
        return int(n) if isinstance(n, (int, np.integer)) and n > 0 else None
    except Exception:  # noqa: BLE001 - malformed params: the comparison below says how
        return None


def _expected(cell: Any, input_size: int) -> Any:
    key = (cell, input_size)
    try:
        return _EXPECTED[key]
    except TypeError:
        key = None
    except KeyError:
        pass
    out = jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))
    if key is not None:
        _remember(_EXPECTED, key, out)
    return out


def _remember(cache: dict, key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _compare(exp: Any, got: Any, path: tuple, *, shapes: bool = True) -> None:
    """Raises :class:`_Mismatch` at the first difference between ``exp`` and ``got``."""
    if isinstance(exp, jax.ShapeDtypeStruct):
        if got is None or _is_container(got):
            what = "None" if got is None else f"a {type(got).__name__}"
            raise _Mismatch(TypeError, path, f"is {what}, expected an array of shape {exp.shape}")
        if shapes and _shape(got) != tuple(exp.shape):
            raise _Mismatch(
                ValueError, path, f"has shape {_shape(got)}, expected {tuple(exp.shape)}"
            )
        return
    if _is_namedtuple(exp):
        if type(got) is not type(exp):
            raise _Mismatch(TypeError, path, f"got {type(got).__name__}; expected")
        # Fields filled after init (an attention memory bound into the parameters) are the
        # params type's business: it lists them in a class attribute `runtime_fields`.
        names = [n for n in exp._fields if n not in getattr(type(exp), RUNTIME_FIELDS, ())]
        # Which optional fields are present says more than a shape (a projection changes
        # w_hh's shape too), so report presence first.
        for name in names:
            e, g = getattr(exp, name), getattr(got, name)
            if e is None and g is not None:
                raise _Mismatch(ValueError, path + (name,), "extra")
            if e is not None and g is None:
                raise _Mismatch(ValueError, path + (name,), "missing")
        for name in names:
            _compare(getattr(exp, name), getattr(got, name), path + (name,), shapes=shapes)
        return
    if isinstance(exp, (tuple, list)):
        if not isinstance(got, (tuple, list)) or _is_namedtuple(got):
            raise _Mismatch(TypeError, path, f"is a {type(got).__name__}, expected a tuple")
        if len(got) != len(exp):
            raise _Mismatch(ValueError, path, f"has {len(got)} entries, expected {len(exp)}")
        for k, (e, g) in enumerate(zip(exp, got, strict=True)):
            _compare(e, g, path + (k,), shapes=shapes)
        return
    if isinstance(exp, dict):
        if not isinstance(got, dict) or set(got) != set(exp):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise _Mismatch(TypeError, path, f"has keys {keys}, expected {sorted(exp)}")
        for name in exp:
            _compare(exp[name], got[name], path + (name,), shapes=shapes)
        return
    if exp is None:
        if got is not None:
            raise _Mismatch(ValueError, path, "extra")
        return
    # Any other pytree node: compare the structure as a whole.
    e_def, g_def = jax.tree_util.tree_structure(exp), jax.tree_util.tree_structure(got)
    if e_def != g_def:
        raise _Mismatch(TypeError, path, f"has structure {g_def}, expected {e_def}")
    for e, g in zip(jax.tree_util.tree_leaves(exp), jax.tree_util.tree_leaves(got), strict=True):
        _compare(e, g, path, shapes=shapes)


# -- messages ---------------------------------------------------------------------------------
def _message(cell: Any, params: Any, m: _Mismatch) -> str:
    """Turns a mismatch at ``m.path`` into a sentence naming the (sub)cell it concerns."""
    owner, context, rest, sub_params = _locate(cell, params, m.path)
    where = " in ".join(reversed(context))
    head = f"{where}: " if where else ""
    name = describe(owner)
    field = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in rest).replace(".[", "[")
    if m.text == "extra":
        hint = _option_hint(owner, sub_params, rest[-1], want_present=True)
        text = f"{head}{name} got parameters with {field}, which this cell does not use"
        text += f": was it created with {hint}?" if hint else "."
        return text + " Pass the parameters from this cell's own init."
    if m.text == "missing":
        hint = _option_hint(owner, sub_params, rest[-1], want_present=False)
        text = f"{head}{name} needs parameter {field}, which the given parameters lack"
        return text + (
            f": were they created by a cell with {hint}?"
            if hint
            else ". Pass the parameters from this cell's own init."
        )
    if m.text.startswith("got ") and not rest:
        got_type = type(_at(params, m.path)).__name__
        exp_type = m.text  # "got X; expected"
        exp_name = _expected_type_name(owner, sub_params)
        text = f"{head}{name} {exp_type} {exp_name} from {type(owner).__name__}.init"
        hint = _child_hint(owner, got_type) if _is_namedtuple(_at(params, m.path)) else None
        return text + (f" ({hint})" if hint else "")
    subject = field or "params"
    text = (
        f"{head}{subject} {m.text} for {name}, as "
        f"{type(owner).__name__}.init{_input_note(owner, sub_params)} creates them"
    )
    fix = _fix_hint(owner, sub_params)
    return text + (f": were they created by {fix}?" if fix else "")


def _locate(cell: Any, params: Any, path: tuple) -> tuple[Any, list[str], tuple, Any]:
    """Walks ``path`` through combinators: returns the innermost cell owning the rest of the
    path, a description of each step taken, the remaining path and that cell's parameters."""
    owner, context, sub, k = cell, [], params, 0
    while k < len(path):
        item = path[k]
        child = getattr(owner, item, None) if isinstance(item, str) else None
        inner = _unwrap(owner)
        if not _is_cell(child) and inner is not owner:
            context.append(f"the cell wrapped by {type(owner).__name__}")
            owner = inner
            continue
        if _is_cell(child):
            context.append(f"{item} of {type(owner).__name__}")
            owner, sub, k = child, getattr(sub, item), k + 1
            continue
        if (
            isinstance(child, tuple)
            and child
            and all(_is_cell(c) for c in child)
            and k + 1 < len(path)
            and isinstance(path[k + 1], int)
        ):
            j = path[k + 1]
            label = f"layer {j}" if item == "layers" else f"{item}[{j}]"
            context.append(f"{label} of {type(owner).__name__}")
            owner, sub, k = child[j], getattr(sub, item)[j], k + 2
            continue
        break
    return owner, context, path[k:], sub


def _unwrap(cell: Any) -> Any:
    """The innermost cell of wrappers that take their inner cell's parameters unchanged
    (dropout, zoneout, weight drop): a cell with one cell-valued field whose ``init`` returns
    the same parameter type."""
    while True:
        inner = _inner_cells(cell)
        if len(inner) != 1 or not _same_params_type(cell, inner[0]):
            return cell
        cell = inner[0]


def _inner_cells(cell: Any) -> list[Any]:
    if not dataclasses.is_dataclass(cell):
        return []
    return [v for f in dataclasses.fields(cell) if _is_cell(v := getattr(cell, f.name))]


def _same_params_type(outer: Any, inner: Any) -> bool:
    try:
        return type(_expected(outer, 1)) is type(_expected(inner, 1))
    except Exception:  # noqa: BLE001 - no reference: not known to be a wrapper
        return False


def _option_hint(cell: Any, params: Any, field: Any, *, want_present: bool) -> str | None:
    """A hyperparameter change after which ``cell.init`` has ``field`` (or lacks it)."""
    cell = _unwrap(cell)
    if not dataclasses.is_dataclass(cell) or not isinstance(field, str):
        return None
    n = _input_size(cell, params) or 1
    leaf = getattr(params, field, None) if want_present else None
    for f in dataclasses.fields(cell):
        value = getattr(cell, f.name)
        if isinstance(value, bool):
            candidates = [not value]
        elif value is None:
            candidates = [d for d in dict.fromkeys(_shape(leaf)) if d > 0] if want_present else []
        elif f.default is None:
            candidates = [None]
        else:
            continue
        for c in candidates:
            try:
                other = _replaced(cell, f.name, c)
                exp = _expected(other, n)
            except Exception:  # noqa: BLE001 - an invalid combination is just not the answer
                continue
            e = getattr(exp, field, None)
            if want_present and e is not None and (leaf is None or e.shape == _shape(leaf)):
                return f"{f.name}={c!r}"
            if not want_present and e is None and field in getattr(exp, "_fields", ()):
                return f"{f.name}={c!r}"
    return None


def _fix_hint(cell: Any, params: Any) -> str | None:
    """One hyperparameter change after which ``params`` match ``cell.init`` exactly, if any.

    Candidates: each bool flipped, an optional field set to None, and integer fields set to a
    dimension of one of the parameters (or that dimension divided by a small gate count).
    """
    cell = _unwrap(cell)
    n = _input_size(cell, params)
    if n is None or not dataclasses.is_dataclass(cell):
        return None
    dims = {d for leaf in jax.tree_util.tree_leaves(params) for d in _shape(leaf)}
    sizes = sorted({d // g for d in dims for g in range(1, 9) if d % g == 0 and d // g > 0})
    for f in dataclasses.fields(cell):
        value = getattr(cell, f.name)
        if isinstance(value, bool):
            candidates: list[Any] = [not value]
        elif isinstance(value, int) or (value is None and f.default is None):
            candidates = [d for d in sizes if d != value]
            if value is not None and f.default is None:
                candidates.insert(0, None)
        else:
            continue
        for c in candidates:
            try:
                _compare(_expected(_replaced(cell, f.name, c), n), params, ())
            except Exception:  # noqa: BLE001 - invalid, or still different: not the answer
                continue
            return describe(_replaced(cell, f.name, c))
    return None


def _child_hint(cell: Any, got_type: str) -> str | None:
    """Says so when the parameters given are those of one of ``cell``'s components."""
    for f in dataclasses.fields(cell) if dataclasses.is_dataclass(cell) else ():
        value = getattr(cell, f.name)
        children = value if isinstance(value, tuple) else (value,)
        for child in children:
            if not _is_cell(child):
                continue
            try:
                exp = _expected(child, 1)
            except Exception:  # noqa: BLE001
                continue
            if type(exp).__name__ == got_type:
                return (
                    f"these look like the parameters of one {describe(child)}; "
                    f"{type(cell).__name__}.init creates those of every component"
                )
    return "the parameters of another cell?"


def _expected_type_name(cell: Any, params: Any) -> str:
    try:
        return type(_expected(cell, _input_size(cell, params) or 1)).__name__
    except Exception:  # noqa: BLE001
        return "the parameters"


def _input_note(cell: Any, params: Any) -> str:
    n = _input_size(cell, params)
    return "" if n is None else f"(key, input_size={n})"


def _at(tree: Any, path: tuple) -> Any:
    for p in path:
        tree = tree[p] if isinstance(p, int) or isinstance(tree, dict) else getattr(tree, p)
    return tree


# -- small helpers ----------------------------------------------------------------------------
def _shape(x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if type(shape) is tuple:  # the common case (arrays, tracers), kept fast for the cache key
        return shape
    if x is None:
        return ()
    if shape is None:
        try:
            shape = np.shape(x)
        except Exception:  # noqa: BLE001 - not array-like: no shape
            return ()
    return tuple(int(d) for d in shape)


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _is_container(x: Any) -> bool:
    return isinstance(x, (tuple, list, dict))


def _is_cell(x: Any) -> bool:
    # Duck-typed, not isinstance(x, Cell): seqjax.cells.base calls into this module, and the
    # library keeps its import graph free of cycles.
    return (
        not isinstance(x, type)
        and callable(getattr(x, "init", None))
        and callable(getattr(x, "initial_carry", None))
    )


def _replaced(cell: Any, name: str, value: Any) -> Any:
    return dataclasses.replace(cell, **{name: value})


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except Exception:  # noqa: BLE001 - e.g. arrays as hyperparameters
        return False


def _describe_value(value: Any) -> str:
    if isinstance(value, tuple) and value and all(_is_cell(v) for v in value):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    if _is_cell(value):
        return describe(value)
    if isinstance(value, type):
        return getattr(value, "__name__", repr(value))
    if callable(value):
        return getattr(value, "__qualname__", type(value).__name__)
    return repr(value)

"""The public surface of ``seqjax``: what ``dir``, ``__all__`` and ``help`` show a user."""

from __future__ import annotations

import inspect
import pathlib
import pydoc
import subprocess
import sys

import pytest

import seqjax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _public_submodules() -> set[str]:
    """Every module or package directly under seqjax/ whose name has no leading underscore."""
    pkg = ROOT / "seqjax"
    names = {p.stem for p in pkg.glob("*.py")}
    names |= {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    return {n for n in names if not n.startswith("_")} - {"scan"}  # seqjax.scan is the function


def test_dir_lists_the_public_api_only():
    names = dir(seqjax)
    assert names == sorted(set(seqjax.__all__) | {"__version__"})
    for leaked in ("annotations", "importlib", "_importlib", "_typing", "__getattr__"):
        assert leaked not in names


def test_every_public_submodule_is_listed_and_loads():
    listed = set(seqjax.__all__)
    missing = _public_submodules() - listed
    assert not missing, f"add {sorted(missing)} to seqjax.__all__"
    for name in _public_submodules():
        module = getattr(seqjax, name)
        assert inspect.ismodule(module) and module.__name__ == f"seqjax.{name}"


def test_every_name_in_all_resolves_and_is_documented():
    for name in seqjax.__all__:
        obj = getattr(seqjax, name)
        if inspect.ismodule(obj):
            assert f"``seqjax.{name}``" in seqjax.__doc__, f"module docstring omits {name}"
        assert not name.startswith("_")
    with pytest.raises(AttributeError, match="module 'seqjax' has no attribute 'nope'"):
        _ = seqjax.nope


def test_lazy_submodules_are_listed_before_they_are_imported():
    code = (
        "import sys, seqjax\n"
        "lazy = [m for m in ('train', 'ctc', 'flax') if 'seqjax.' + m not in sys.modules]\n"
        "assert lazy, 'nothing is lazy any more'\n"
        "assert all(m in dir(seqjax) for m in lazy), dir(seqjax)\n"
        "assert seqjax.train.__name__ == 'seqjax.train'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize(("cell", "limit"), [("LSTM", 70), ("GRU", 45), ("SimpleRNN", 40)])
def test_cell_docstrings_hold_what_a_user_reads(cell, limit):
    """Equations, options, shapes and an example; the mapping tables live in docs/cells.md."""
    doc = inspect.getdoc(getattr(seqjax, cell))
    assert len(doc.splitlines()) <= limit
    for part in (".. math::", "Options", "Shapes", "Example:", "docs/cells.md"):
        assert part in doc
    assert "weight_ih" not in doc and "Attributes:" not in doc
    page = (ROOT / "docs" / "cells.md").read_text()
    assert "weight_ih_l{k}.T" in page and "recurrent_kernel" in page and "GRUCell" in page


def test_help_is_shorter_than_it_was():
    # help(seqjax.LSTM) was 256 lines before the docstrings moved their tables to the docs.
    text = pydoc.render_doc(seqjax.LSTM, renderer=pydoc.plaintext)
    assert len(text.splitlines()) < 256

"""Results files: JSON, Markdown tables and PNG figures, and the run-a-grid helper.

Every experiment writes ``<out>/<tag>.json`` (the numbers and the command that made them),
``<tag>.md`` (the table the README quotes) and ``<tag>.png`` (matplotlib, optional: without it
the figure is skipped with a note). A grid experiment trains one model per point of a product
of axes; :func:`run_grid` runs it and :func:`write_outputs` / :func:`replot` write the files.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.scaffold.cli import UsageError

__all__ = [
    "markdown_table",
    "pyplot",
    "replot",
    "run_grid",
    "write_json",
    "write_outputs",
]


def _other_process() -> bool:
    """True in the processes other than 0 of a multi-process run (they write no results)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized() and jax.process_index() != 0


def write_json(
    path: str | os.PathLike, obj: Any, *, indent: int | None = 1, sort_keys: bool = False
) -> None:
    """Writes ``obj`` as JSON atomically (a temporary file renamed over ``path``).

    In a multi-process run (``jax.distributed``) only process 0 writes; the others return.
    """
    if _other_process():
        return
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    os.replace(tmp, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Lines of a Markdown table.

    Example:
      >>> print("\\n".join(markdown_table(["a", "b"], [[1, 2]])))
      | a | b |
      |---|---|
      | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend, or None if not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_grid(
    axes: Mapping[str, Sequence[Any]],
    run_one: Callable[..., dict[str, Any]],
    *,
    log: Callable[[str], None] = print,
    summary: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Calls ``run_one(**point)`` for every point of the product of ``axes``, in order.

    Args:
      axes: name -> values; the first axis varies slowest.
      run_one: trains and evaluates one point, returns its JSON-serialisable row.
      log: called with one JSON line per finished point.
      summary: the part of a row that is logged (default: the whole row).

    Returns:
      ``(rows, wall_s)``.

    Example:
      >>> rows, _ = run_grid({"a": [1, 2], "b": [10]}, lambda a, b: {"s": a + b},
      ...                    log=lambda s: None)
      >>> rows
      [{'s': 11}, {'s': 12}]
    """
    rows, t0 = [], time.perf_counter()
    for values in itertools.product(*axes.values()):
        row = run_one(**dict(zip(axes, values, strict=True)))
        log(json.dumps(summary(row) if summary else row))
        rows.append(row)
    return rows, time.perf_counter() - t0


def write_outputs(
    out_dir: str | os.PathLike,
    tag: str,
    payload: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
    figure: Callable[[dict[str, Any], Path], None] | None = None,
    *,
    indent: int | None = 1,
) -> None:
    """Writes ``<tag>.json`` (the payload), ``<tag>.md`` and ``<tag>.png`` in ``out_dir``.

    In a multi-process run (``jax.distributed``) only process 0 writes.

    Args:
      out_dir: results folder (created).
      tag: file stem.
      payload: the JSON-serialisable results.
      markdown: payload -> Markdown text.
      figure: ``(payload, png_path)`` -> draws and saves the figure; skipped (with a note on
        stderr) when matplotlib is not installed.
      indent: JSON indentation.
    """
    if _other_process():  # a multi-process run: process 0 writes the results
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{tag}.json", payload, indent=indent)
    _write_md_png(out, tag, payload, markdown, figure)


def _write_md_png(out: Path, tag: str, payload, markdown, figure) -> None:
    (out / f"{tag}.md").write_text(markdown(payload), encoding="utf-8")
    if figure is None:
        return
    if pyplot() is None:
        print(f"note: matplotlib is not installed; {out / tag}.png not drawn", file=sys.stderr)
        return
    figure(payload, out / f"{tag}.png")


def replot(
    out_dir: str | os.PathLike,
    tag: str,
    markdown: Callable[[dict[str, Any]], str],
    figure: Callable[[dict[str, Any], Path], None] | None = None,
) -> dict[str, Any]:
    """Rebuilds ``<tag>.md`` and ``<tag>.png`` from the saved ``<tag>.json`` (no training).

    Returns:
      The saved payload.

    Raises:
      UsageError: the JSON file is missing or unreadable.
    """
    out = Path(out_dir)
    path = out / f"{tag}.json"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"--replot: expected saved results {str(path)!r}, got no such file (run without "
            "--replot first)"
        ) from None
    except (OSError, ValueError) as e:
        raise UsageError(f"--replot: expected JSON results in {str(path)!r}, got {e}") from None
    _write_md_png(out, tag, payload, markdown, figure)
    return payload

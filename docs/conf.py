"""Sphinx configuration: API reference from the docstrings, plus the Markdown guides.

Build (warnings are errors, every cross-reference must resolve)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -n -b html docs docs/_build/html

The docstring examples are run as doctests by ``tests/test_docstrings.py`` (part of the test
suite), so this build does not run them a second time.

Local build rules, at the bottom of this file:

- Re-exported names are documented once, where users import them from (``seqjax.LSTM``, not
  ``seqjax.cells.lstm.LSTM``). A cross-reference to another path of the same object
  (``seqjax.cells.LSTM``, or a short name in a docstring of the module that defines it) resolves
  to that single entry instead of failing (``_resolve_reexport``).
- Completeness: every name in the ``__all__`` of every public module (any ``seqjax`` module
  without a leading underscore in its path) must be documented on some page; a missing one is
  a warning, hence an error under ``-W`` (``_check_complete``).
- A Google-style ``a, b: description`` line under ``Attributes:`` documents each name
  (``_split_shared_fields``).
- Every ``seqjax.data`` module gets a section on the data page, listed there or not
  (``_add_data_modules``).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import types
from pathlib import Path

from sphinx.util import logging
from sphinx.util.nodes import make_refnode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import seqjax  # noqa: E402  (after the path insert, so an uninstalled checkout builds too)

project = "seqjax"
author = "seqjax contributors"
copyright = "seqjax contributors"  # noqa: A001 - Sphinx's name for it
release = seqjax.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]


def _public_modules() -> list[str]:
    """``seqjax`` and every submodule without a leading underscore in its dotted name."""
    names = ["seqjax"]
    for info in pkgutil.walk_packages(seqjax.__path__, prefix="seqjax."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


nitpicky = True
# Types of other libraries and of the standard library appear in signatures. There is no
# intersphinx (the build must work without network access), so references to them cannot
# resolve; they are the only ones ignored. Any reference to a seqjax name must resolve.
_EXTERNAL = "jax|jaxlib|jnp|numpy|np|scipy|optax|flax|nnx|orbax|chex|torch|matplotlib"
nitpick_ignore_regex = [
    (r"py:.*", rf"({_EXTERNAL})(\..*)?"),
    (r"py:.*", r"(collections\.abc|os|pathlib|typing)\..*"),
]

# Napoleon: Google-style docstrings.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = True

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"seqjax {release}"
html_static_path: list[str] = []

logger = logging.getLogger(__name__)


def _lookup(dotted: str):
    """The object a dotted path names, or None.

    Attributes win over submodules of the same name (``seqjax.scan`` is the function the package
    exports, not the module ``seqjax/scan.py``); a path through a submodule that an attribute
    shadows (``seqjax.scan.ScanOptions``) falls back to importing the longest module prefix.
    """
    parts = dotted.split(".")
    try:
        obj = importlib.import_module(parts[0])
        for i in range(1, len(parts)):
            try:
                obj = getattr(obj, parts[i])
            except AttributeError:
                obj = importlib.import_module(".".join(parts[: i + 1]))
        return obj
    except Exception:  # noqa: BLE001 - fall back to the module-prefix walk below
        pass
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001 - any failure means "not a module path"
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _documented_by_identity(app) -> dict[int, tuple[str, str, str]]:
    """id(object) -> (docname, documented name, node id) of every documented Python object.

    Built once per build, after all pages are read (kept on ``app``, never pickled with ``env``).
    """
    env = app.env
    cache = getattr(app, "_seqjax_by_id", None)
    if cache is None:
        cache = {}
        for name, entry in env.get_domain("py").objects.items():
            if entry.objtype == "module" or entry.aliased:
                continue
            obj = _lookup(name)
            if obj is not None and not isinstance(obj, (int, float, str, bool, type(None))):
                cache.setdefault(id(obj), (entry.docname, name, entry.node_id))
        app._seqjax_by_id = cache
    return cache


def _docstring_owner(node) -> str | None:
    """The dotted name of the object whose docstring holds ``node``, from its source info."""
    while node is not None:
        source = getattr(node, "source", None)
        if source:
            match = re.search(r"docstring of ([\w.]+)", source)
            return match.group(1) if match else None
        node = node.parent
    return None


def _resolve_reexport(app, env, node, contnode):
    """Resolve a reference to another import path of an object documented once elsewhere."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    module = node.get("py:module") or ""
    klass = node.get("py:class") or ""
    candidates = []
    if module:
        if klass:
            candidates.append(f"{module}.{klass}.{target}")
        candidates.append(f"{module}.{target}")
    # A re-exported object's docstring is written relative to the module that defines it
    # (``seqjax.scan_engine``), not the one whose page shows it (``seqjax.kernels``).
    owner = _docstring_owner(node)
    if owner:
        parts = owner.split(".")
        candidates += [".".join(parts[:i] + [target]) for i in range(len(parts), 0, -1)]
    candidates.append(target)
    by_id = _documented_by_identity(app)
    for dotted in candidates:
        if not dotted.startswith("seqjax"):
            continue
        obj = _lookup(dotted)
        if obj is None or id(obj) not in by_id:
            continue
        docname, _, node_id = by_id[id(obj)]
        return make_refnode(app.builder, node["refdoc"], docname, node_id, contnode, dotted)
    return None


def _check_complete(app, env):
    """Warn for every public name (in the ``__all__`` of a public module) no API page documents."""
    documented = set(_documented_by_identity(app))
    for modname in _public_modules():
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                continue  # a submodule listed in __all__ has its own page
            if f"{modname}.{name}" in env.get_domain("py").objects or id(obj) in documented:
                continue
            logger.warning(
                "%s.%s is public (in __all__) but no API page under docs/api documents it",
                modname,
                name,
                type="seqjax",
                subtype="undocumented",
            )


def _add_data_modules(app, docname, source):
    """Append a section to the data page for each ``seqjax.data`` module it does not list.

    Datasets are added as modules of their own (text, synthetic, music, ...); each gets its
    reference without an edit here.
    """
    if docname != "api/data":
        return
    import seqjax.data

    for info in sorted(pkgutil.iter_modules(seqjax.data.__path__), key=lambda i: i.name):
        name = f"seqjax.data.{info.name}"
        if info.name.startswith("_") or f"automodule:: {name}\n" in source[0]:
            continue
        source[0] += (
            f"\n``{name}``\n{'-' * (len(name) + 4)}\n\n.. automodule:: {name}\n   :members:\n"
        )


_SHARED_FIELD = re.compile(r"^(\s*):ivar (\w+(?:, \w+)+): ?(.*)$")


def _split_shared_fields(app, what, name, obj, options, lines):
    """Give each name of a Google-style ``a, b: description`` attribute line its own field.

    Napoleon turns the line into ``:ivar a, b: ...``, which Sphinx reads as type ``a,`` and
    name ``b``; the names then show as broken type references. Each name gets the description.
    """
    out, i = [], 0
    while i < len(lines):
        match = _SHARED_FIELD.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, names, first = match.groups()
        j = i + 1
        while j < len(lines) and lines[j].startswith(indent + " ") and lines[j].strip():
            j += 1
        for field_name in names.split(", "):
            out.append(f"{indent}:ivar {field_name}: {first}")
            out.extend(lines[i + 1 : j])
        i = j
    lines[:] = out


def setup(app):
    # After napoleon (priority 500) has turned Google sections into fields.
    app.connect("autodoc-process-docstring", _split_shared_fields, priority=600)
    app.connect("source-read", _add_data_modules)
    app.connect("missing-reference", _resolve_reexport)
    app.connect("env-check-consistency", _check_complete)
    return {"parallel_read_safe": True}

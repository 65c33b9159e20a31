"""What every experiment shares: the command line, input checks, results files, grids.

An experiment package (``experiments/<name>/``) keeps its defaults in ``config.py``, its model,
data and training in their own modules, and a ``__main__.py`` that only builds the command line
from these pieces:

- :mod:`experiments.scaffold.cli`: :class:`UsageError`, the one-line-error
  :class:`ArgumentParser`, config dataclass fields as ``--field-name`` options, :func:`run`;
- :mod:`experiments.scaffold.checks`: checks made before anything is written;
- :mod:`experiments.scaffold.configs`: checks of a config's fields named by their options,
  the resume check, and reading back a run's ``config.json``;
- :mod:`experiments.scaffold.results`: JSON/Markdown/PNG writers and :func:`run_grid`;
- :mod:`experiments.scaffold.restore`: a run's parameters from its checkpoints;
- :mod:`experiments.scaffold.timeline`: training wall time over resumed sessions (a hook);
- :mod:`experiments.scaffold.distributed`: ``--coordinator``/``--num-processes``/
  ``--process-id`` (or JAX's auto-detection) on every command, process 0 prints.
"""

from experiments.scaffold.checks import at_least, check_output_dir, check_run_dir, in_range
from experiments.scaffold.cli import (
    ArgumentParser,
    UsageError,
    add_config_arguments,
    add_subcommands,
    apply_overrides,
    config_from_argv,
    run,
    value_parser,
)
from experiments.scaffold.configs import (
    FieldChecks,
    check_resume,
    option_name,
    read_saved_config,
    train_config,
)
from experiments.scaffold.distributed import (
    add_distributed_arguments,
    initialize_from_args,
    is_main_process,
)
from experiments.scaffold.restore import restore_params
from experiments.scaffold.results import (
    markdown_table,
    pyplot,
    replot,
    run_grid,
    write_json,
    write_outputs,
)
from experiments.scaffold.timeline import Timeline

__all__ = [
    "FieldChecks",
    "check_resume",
    "option_name",
    "read_saved_config",
    "ArgumentParser",
    "Timeline",
    "UsageError",
    "add_config_arguments",
    "add_distributed_arguments",
    "add_subcommands",
    "apply_overrides",
    "at_least",
    "check_output_dir",
    "check_run_dir",
    "config_from_argv",
    "in_range",
    "initialize_from_args",
    "is_main_process",
    "markdown_table",
    "pyplot",
    "replot",
    "restore_params",
    "run",
    "run_grid",
    "train_config",
    "value_parser",
    "write_json",
    "write_outputs",
]

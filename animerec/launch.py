"""What ``main.py`` does with its command line before Hydra sees it.

- :func:`prepare_argv` turns ``--steps STEPS`` and ``--overrides "A=1 B=2"`` (how ``mlflow run``
  passes its parameters, each as one shell word) into Hydra overrides, splitting the string the
  way Hydra reads it so that ``recs.anime="Cowboy Bebop"`` stays one override; ``-v`` (also inside
  the overrides: ``-P hydra_options="-v model=best"``) shows third-party output again.
- :func:`preflight` composes the configuration before Hydra does, without checking its values:
  a Hydra composition error (an unknown key, a bad preset name, broken override syntax) then
  prints one ``error:`` paragraph and exits with status 2 instead of Hydra's exit 1. The values
  are checked against the schema once, by :func:`animerec.pipeline.run_pipeline` (in a sweep, by
  each job, so one bad job does not stop the others).
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from animerec.config import split_overrides
from animerec.console import VERBOSE_ENV
from animerec.errors import ConfigError, UserError
from animerec.pipeline import compose_config, one_line

# Hydra's own flags: with them the command line is Hydra's business, not a pipeline run.
MULTIRUN_FLAGS = ("-m", "--multirun")
VERBOSE_FLAGS = ("-v", "--verbose")  # third-party output shown again (animerec/console.py)
MAX_PREFLIGHT_JOBS = 256


def prepare_argv(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        for flag in ("--overrides", "--steps"):
            if arg == flag or arg.startswith(flag + "="):
                if arg == flag:
                    if i + 1 >= len(args):
                        _fail(f"{flag} needs a value")
                    value, i = args[i + 1], i + 1
                else:
                    value = arg.split("=", 1)[1]
                if flag == "--overrides":
                    out.extend(split_overrides(value))
                elif value.strip():
                    out.append(f"main.steps='{value.strip()}'")
                break
        else:
            out.append(arg)
        i += 1
    if any(arg in VERBOSE_FLAGS for arg in out):  # every step's process inherits it
        os.environ[VERBOSE_ENV] = "1"
    return [arg for arg in out if arg not in VERBOSE_FLAGS]


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def preflight(argv: Sequence[str], config_dir: Path) -> None:
    """Exit 2 with an ``error:`` line when the overrides cannot make a valid configuration."""

    flags = [a for a in argv if a.startswith("-")]
    if any(flag not in MULTIRUN_FLAGS for flag in flags):
        return  # --help, --cfg job, --info, ...: Hydra answers those itself
    overrides = [a for a in argv if not a.startswith("-") and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        for job in sweep_jobs(overrides)[:MAX_PREFLIGHT_JOBS] if flags else [overrides]:
            compose_config(job, config_dir, validate=False)  # run_pipeline checks the values, once
    except UserError as err:
        _fail(f"config: {err}")


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The override lists of every job a Hydra sweep over ``overrides`` would run."""

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(f"bad configuration override: {one_line(err)}") from None
    choices: dict[str, list[str]] = {}  # per key, its values (a later override of a key replaces an earlier one)
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:  # interval(...) and the like: a sweeper plugin (Optuna) draws them; each trial is checked then
            choices.pop(key, None)
    return [list(job) for job in itertools.product(*choices.values())]

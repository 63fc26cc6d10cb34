"""What ``main.py`` does with its command line, and how Hydra overrides travel through one string.

- :func:`prepare_argv` (argparse) turns ``--steps STEPS`` and ``--overrides "A=1 B=2"`` (how ``mlflow run``
  passes its parameters, each as one shell word) into Hydra overrides; ``-v`` (also inside the
  overrides: ``-P hydra_options="-v model=best"``) shows third-party output again.
- :func:`split_overrides` reads Hydra overrides typed as one string (the ``hydra_options`` parameter of
  ``mlflow run``, a component's ``--overrides``): whitespace inside quotes or brackets stays, so
  ``recs.anime="Cowboy Bebop"`` and ``recs.genres=[Action,"Slice of Life"]`` arrive unchanged. The pipeline
  hands a step's process its overrides as a JSON list, read back exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from typing import Sequence

from animerec.console import VERBOSE_ENV

VERBOSE_FLAGS = ("-v", "--verbose")  # third-party output shown again (animerec/console.py)


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """``main.py``'s own flags read; what is left (overrides, Hydra's flags such as ``-m``) is Hydra's."""
    parser = argparse.ArgumentParser(prog="main.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--steps", default="", help="the steps to run (main.steps)")
    parser.add_argument("--overrides", default="", help="Hydra overrides in one string")
    parser.add_argument(*VERBOSE_FLAGS, dest="verbose", action="store_true", help="show every library's output")
    known, rest = parser.parse_known_args(list(argv))
    overrides = [*split_overrides(known.overrides), *rest]
    if known.verbose or any(arg in VERBOSE_FLAGS for arg in overrides):  # every step's process inherits it
        os.environ[VERBOSE_ENV] = "1"
    steps = [f"main.steps='{known.steps.strip()}'"] if known.steps.strip() else []
    return [*steps, *(arg for arg in overrides if arg not in VERBOSE_FLAGS)]


def split_overrides(text: str | None) -> list[str]:
    """Hydra overrides in one string -> a list, split on whitespace outside quotes and brackets, as Hydra reads them;
    a JSON list of overrides (how the pipeline hands them to a step's process) is read as JSON."""
    text = (text or "").strip()
    if text.startswith("[") and text.endswith("]"):
        with contextlib.suppress(ValueError):
            return [str(override) for override in json.loads(text)]
    pieces, current, quote, depth, escaped = [], "", None, 0, False
    for ch in text:
        if quote is None and depth == 0 and ch.isspace():
            if current:
                pieces.append(current)
            current = ""
            continue
        current += ch
        if escaped:
            escaped = False
        elif quote:
            escaped, quote = ch == "\\", None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(]})":
            depth = max(0, depth + (1 if ch in "[{(" else -1))
    return pieces + [current] if current else pieces


def quote_value(value: object) -> str:
    """A value as a Hydra double-quoted string: backslashes and quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

"""What ``main.py`` does with its command line, and how Hydra overrides travel through one string.

- :func:`prepare_argv` (argparse) turns ``--steps STEPS`` and ``--overrides "A=1 B=2"`` (how ``mlflow run``
  passes its parameters, each as one shell word) into Hydra overrides; ``-v`` (also inside the
  overrides: ``-P hydra_options="-v model=best"``) shows third-party output again.
- :func:`split_overrides` / :func:`join_overrides` carry Hydra overrides through one string (the
  ``hydra_options`` parameter of ``mlflow run``, a component's ``--overrides``): whitespace inside
  quotes or brackets stays, so ``recs.anime="Cowboy Bebop"`` and ``recs.genres=[Action,"Slice of Life"]``
  arrive unchanged.
"""

from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

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


_OPEN, _CLOSE = "[{(", "]})"


def _scan(text: str, on_char: Callable[[int, str, bool], None]) -> None:
    """Call ``on_char(i, ch, top)`` for each character; ``top`` is True outside quotes and brackets."""
    quote, depth, escaped = None, 0, False
    for i, ch in enumerate(text):
        top = quote is None and depth == 0
        on_char(i, ch, top)
        if escaped:
            escaped = False
        elif quote:
            if ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)


def split_overrides(text: str | None) -> list[str]:
    """Hydra overrides in one string -> a list, splitting on whitespace outside quotes and brackets."""
    pieces: list[str] = []
    current: list[str] = []

    def on_char(_i: int, ch: str, top: bool) -> None:
        if top and ch.isspace():
            if current:
                pieces.append("".join(current))
                current.clear()
        else:
            current.append(ch)

    _scan(text or "", on_char)
    if current:
        pieces.append("".join(current))
    return pieces


def quote_value(value: object) -> str:
    """A value as a Hydra double-quoted string: backslashes and quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_override(override: str) -> str:
    """An override whose value holds bare whitespace (``a=Cowboy Bebop``) with that value double-quoted."""
    bare = []
    _scan(override, lambda i, ch, top: bare.append(i) if top and ch.isspace() else None)
    if not bare or "=" not in override:
        return override
    key, value = override.split("=", 1)
    return f"{key}={quote_value(value.strip())}"


def join_overrides(overrides: Sequence[str]) -> str:
    """The inverse of :func:`split_overrides`, for a list of Hydra overrides."""
    return " ".join(quote_override(o) for o in overrides)

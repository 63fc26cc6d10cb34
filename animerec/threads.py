"""Two halves of one piece of work at once, for the loops that let go of the interpreter lock (numba's, scipy's)."""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")
U = TypeVar("U")


def in_two_threads(first: Callable[[], T], second: Callable[[], U]) -> tuple[T, U]:
    """``(first(), second())``, the second run in a helper thread while this one runs the first. The helper is
    joined before this returns (no thread outlives the call, so a server's worker processes fork safely), and
    an error in it is raised here."""
    done: list = []

    def run() -> None:
        try:
            done.append((True, second()))
        except BaseException as err:  # handed to the caller
            done.append((False, err))

    helper = threading.Thread(target=run)
    helper.start()
    try:
        result = first()
    finally:
        helper.join()
    ok, value = done[0]
    if not ok:
        raise value
    return result, value

"""What a pipeline run prints: the ``animerec`` loggers, and third-party noise turned off at its source.

Quiet by default: TensorFlow's C++ log (and its CUDA probing, which writes to the process's stderr before
TensorFlow reads any setting: :func:`native_stderr_quiet`), MLflow's INFO lines and artifact progress bars,
W&B's banners (each step logs one line naming its runs instead), and the pickling and type-hint warnings
of MLflow's pyfunc logging. ``main.py -v`` (or ``ANIMEREC_VERBOSE=1``) shows everything again; errors are
never hidden.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

VERBOSE_ENV = "ANIMEREC_VERBOSE"
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_LOGGING_LEVEL": "WARNING", "WANDB_SILENT": "true",
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
QUIET_WARNINGS = ("Add type hints to the `predict` method", "Passing a Python object as `python_model`")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest, notebooks and tqdm swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging for the ``animerec`` loggers (named loggers; the root logger stays quiet), and, unless
    :func:`verbose`, third-party noise off (set in the environment, so the steps' processes inherit it)."""
    package = logging.getLogger("animerec")
    if not package.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        package.addHandler(handler)
    package.setLevel(logging.DEBUG if verbose() else level)  # -v: our own details too (memory, EASE's timings)
    package.propagate = False
    if verbose():
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{message}")
    for name in ("mlflow", "alembic"):  # MLFLOW_LOGGING_LEVEL is read when mlflow is imported: maybe before this
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").addFilter(lambda record: not any(m in record.getMessage() for m in QUIET_WARNINGS))


@contextlib.contextmanager
def native_stderr_quiet():
    """Native libraries' writes to the process's stderr dropped for the block, unless :func:`verbose`: TensorFlow
    logs its CUDA probing ("Could not find cuda drivers", "failed call to cuInit") before any setting is read.
    Python's own errors are raised, and printed, after the block."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)

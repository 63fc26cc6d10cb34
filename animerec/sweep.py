"""A summary table of a Hydra multirun sweep: one row per job, its overrides, valid and test metrics.

``config.yaml`` registers :class:`SweepSummary` as a Hydra callback. Each job's ``main()``
returns the pipeline's summary (the model it trained, its valid metrics to choose by and its test
metrics to report the choice with); at the end
of a multirun the table is printed and written to ``<sweep dir>/summary.csv`` and
``summary.md``. Every job is also its own MLflow parent run and W&B group, so the runs can be
compared side by side there too (``mlflow ui``; the W&B project's runs table).

    python main.py -m main.steps=[train] model=seed,best
    python main.py -m main.steps=[train] model=best model.negatives_per_positive=2,8 model.l2=1e-3,1e-2
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback

from animerec.artifacts import atomic_write_text

logger = logging.getLogger(__name__)

# choose on the valid_* columns; the test ones are for reporting the choice once
COLUMNS = ("job", "overrides", "status", "error", "model", "valid_ndcg_at_10", "valid_recall_at_10", "valid_rmse",
           "rmse", "mae", "recall_at_10", "ndcg_at_10", "popularity_recall_at_10", "popularity_ndcg_at_10",
           "train_seconds")


def summary_frame(rows: list[dict]):
    frame = pd.DataFrame(rows)
    ordered = [c for c in COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in COLUMNS]
    return frame[ordered]


def markdown(frame) -> str:
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        row: dict[str, Any] = {"job": len(self.rows), "overrides": " ".join(job_return.overrides or []),
                               "status": job_return.status.name.lower()}
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            row.update(job_return.return_value)
            if "error" in row:  # a user error: main() reported it and returned, so the sweep goes on
                row["status"] = "error"
        self.rows.append(row)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        if not self.rows:
            return
        frame = summary_frame(self.rows)
        folder = Path(config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "summary.csv", frame.to_csv(index=False))
        atomic_write_text(folder / "summary.md", markdown(frame))

        with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.float_format", "{:.4f}".format):
            print(f"\nSweep summary ({len(frame)} jobs; {folder / 'summary.csv'})\n{frame.to_string(index=False)}\n",
                  flush=True)
        failed = [row for row in self.rows if row["status"] != "completed"]
        if failed:
            print(f"error: {len(failed)} of {len(self.rows)} sweep jobs failed (see the status and error columns "
                  f"of {folder / 'summary.csv'}).", file=sys.stderr, flush=True)
            sys.exit(2)

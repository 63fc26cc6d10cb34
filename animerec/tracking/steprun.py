"""One pipeline step's run: the local artifact store plus every tracking backend.

Every step does the same things: open its tracking runs (MLflow's, the one ``mlflow run``
created when launched that way, and a W&B run with ``job_type=<step>`` unless W&B is disabled),
log its config, resolve its inputs in the local store and record them, write its outputs as new
store versions and record those. :class:`StepRun` does exactly that over a list of
:class:`animerec.tracking.backends.Tracker` backends, so the steps only hold their logic and no method
here asks which backends are on.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from animerec.artifacts import ArtifactStore, ArtifactVersion, PendingVersion
from animerec.config import WandbConfig
from animerec.pretrained import is_wandb_ref, resolve_model, resolve_wandb_mode
from animerec.tracking.backends import MlflowTracker, Tracker, WandbTracker, flatten

logger = logging.getLogger(__name__)


def default_trackers(store: ArtifactStore, settings: WandbConfig | None = None,
                     mlflow_copy_max_mb: float | None = None) -> list[Tracker]:
    """MLflow, then W&B unless there are no W&B ``settings`` or their ``mode`` resolves to disabled."""
    trackers: list[Tracker] = [MlflowTracker(mlflow_copy_max_mb)]
    mode = resolve_wandb_mode(settings.mode) if settings is not None else "disabled"
    if mode != "disabled":
        trackers.append(WandbTracker(settings, mode, store))
    return trackers


class StepRun:
    """Context manager for one step: ``with StepRun("preprocess", cfg, store) as run: ...``.

    ``trackers`` defaults to :func:`default_trackers` (no W&B without ``wandb_settings``); the first one's run ID
    names the others' runs (``<step>-<id[:8]>``), and each records the others' run IDs.
    """

    def __init__(
        self,
        step: str,
        config: Mapping[str, Any],
        store: ArtifactStore,
        wandb_settings: WandbConfig | None = None,
        mlflow_copy_max_mb: float | None = None,
        trackers: Sequence[Tracker] | None = None,
    ) -> None:
        self.step = step
        self.config = dict(config)
        self.store = store
        self.wandb_settings = wandb_settings
        self.trackers = list(trackers) if trackers is not None else default_trackers(
            store, self.wandb_settings, mlflow_copy_max_mb)
        self.inputs: dict[str, str] = {}
        self._started: list[Tracker] = []

    @property
    def wandb(self) -> WandbTracker | None:
        """The W&B backend, or None when W&B is disabled."""
        return next((t for t in self.trackers if isinstance(t, WandbTracker)), None)

    # lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "StepRun":
        try:
            for tracker in self.trackers:
                first = self._started[0].run_id if self._started else None
                tracker.start(self.step, self.config, self.step if first is None else f"{self.step}-{first[:8]}")
                self._started.append(tracker)
            for tracker in self.trackers:
                others = {k: v for t in self.trackers if t is not tracker for k, v in t.links().items()}
                if others:
                    tracker.link(others)
        except BaseException:
            self._finish(failed=True)
            raise
        logger.info("Step %s: %s, store %s", self.step, ", ".join(t.describe() for t in self.trackers), self.store.root)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._finish(failed=exc_type is not None)

    def _finish(self, failed: bool) -> None:
        # The last opened closes first (W&B before the MLflow run that names it).
        while self._started:
            self._started.pop().finish(failed)

    # inputs and outputs --------------------------------------------------------------------
    def use(self, ref: str) -> ArtifactVersion:
        """Resolve an input in the local store and record it as this run's input."""
        version = self.store.resolve(ref)
        self.inputs[version.name] = version.ref
        for tracker in self.trackers:
            tracker.record_input(version)
        logger.debug("Input %s -> %s", ref, version.path)
        return version

    def use_model(self, ref: str) -> ArtifactVersion:
        """A model by local reference, folder or W&B reference (fetched and cached), recorded as input."""

        wandb, settings = self.wandb, self.wandb_settings
        online_run = wandb.run if wandb is not None and wandb.online else None
        version = resolve_model(ref, self.store, wandb_mode=wandb.mode if wandb is not None else "disabled",
                                project=settings and settings.project, entity=settings and settings.entity,
                                run=online_run)
        if online_run is not None and is_wandb_ref(ref):
            # run.use_artifact already declared the W&B artifact; the other backends record the local copy.
            self.inputs[version.name] = version.ref
            for tracker in self.trackers:
                if tracker is not wandb:
                    tracker.record_input(version)
                    tracker.link({"input.wandb_model": version.metadata.get("wandb_source", str(ref))})
            return version
        return self.use(version.path)

    @contextlib.contextmanager
    def output(
        self, name: str, type: str, *, description: str = "", metadata: dict | None = None
    ) -> Iterator[PendingVersion]:
        """Stage an output; on success store it, then record it with every backend."""
        producer = {"step": self.step, **{f"{t.name}_run_id": t.run_id for t in self.trackers},
                    "inputs": dict(self.inputs)}
        with self.store.new_version(
            name, type, metadata=metadata, producer=producer, config=self.config
        ) as pending:
            yield pending
        for tracker in self.trackers:
            tracker.record_output(pending.version, description)

    # metrics and media ---------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        for tracker in self.trackers:
            tracker.log_metrics(clean, step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        flat = flatten(summary)
        for tracker in self.trackers:
            tracker.log_summary(flat)

    def log_image(self, key: str, path: Path) -> None:
        for tracker in self.trackers:
            tracker.log_image(key, path)

    def log_table(self, key: str, frame) -> None:
        for tracker in self.trackers:
            tracker.log_table(key, frame)

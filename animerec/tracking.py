"""One pipeline step's run: MLflow + W&B tracking around the local artifact store.

Every step does the same things: open an MLflow run (the one ``mlflow run`` created, when
launched that way) and a W&B run with ``job_type=<step>``, log its config, resolve its inputs
in the local store (declaring them to W&B when it is online), write its outputs as new store
versions, and log those as MLflow artifacts and typed W&B artifacts. :class:`StepRun` does
exactly that so the steps themselves only hold their logic.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from animerec.artifacts import ArtifactStore, ArtifactVersion, PendingVersion

logger = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


def resolve_wandb_mode(mode: str | None) -> str:
    """``online``/``offline``/``disabled``; unset means online with an API key, offline without."""
    if mode is None or str(mode).lower() in ("", "none", "null", "auto"):
        env = os.environ.get("WANDB_MODE")
        if env in WANDB_MODES:
            return env
        if env == "dryrun":
            return "offline"
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    mode = str(mode).lower()
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb.mode must be one of {', '.join(WANDB_MODES)} or null (auto); got {mode!r}.")
    return mode


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def log_folder_to_mlflow(folder: Path, artifact_path: str, max_mb: float | None) -> list[str]:
    """Copy ``folder``'s files into the active MLflow run under ``artifact_path``.

    Files over ``max_mb`` (None: no limit) are not copied: a multi-GB raw ratings file or model
    would otherwise be kept twice, once in the store and once in ``mlruns``. The folder's
    ``manifest.json``, which is copied, records their sizes and sha256s. Returns their names.
    """
    import mlflow

    limit = None if max_mb is None else float(max_mb) * 2**20
    left: list[str] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if limit is not None and path.stat().st_size > limit:
            left.append(rel.as_posix())
            continue
        parent = rel.parent.as_posix()
        mlflow.log_artifact(str(path), artifact_path=artifact_path if parent == "." else f"{artifact_path}/{parent}")
    return left


@dataclass
class WandbSettings:
    project: str = "anime-recommender"
    entity: str | None = None
    mode: str | None = None
    group: str | None = None
    dir: str | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "WandbSettings":
        cfg = dict(cfg or {})
        return cls(**{k: cfg.get(k) for k in ("project", "entity", "mode", "group", "dir") if cfg.get(k) is not None})


class StepRun:
    """Context manager for one step: ``with StepRun("preprocess", cfg, store) as run: ...``."""

    def __init__(
        self,
        step: str,
        config: Mapping[str, Any],
        store: ArtifactStore,
        wandb_settings: WandbSettings | None = None,
        mlflow_copy_max_mb: float | None = None,
    ) -> None:
        self.step = step
        self.mlflow_copy_max_mb = mlflow_copy_max_mb
        self.config = dict(config)
        self.store = store
        self.wandb_settings = wandb_settings or WandbSettings()
        self.wandb_mode = resolve_wandb_mode(self.wandb_settings.mode)
        self.mlflow_run = None
        self.wandb_run = None
        self.inputs: dict[str, str] = {}
        self.logged: dict[str, Any] = {}  # W&B artifacts this run logged, by name
        self._ended_mlflow = False

    # lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "StepRun":
        import mlflow

        active = mlflow.active_run()
        if active is None:
            # Under `mlflow run`, MLFLOW_RUN_ID names the run made for this step and start_run resumes it.
            self.mlflow_run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") else self.step)
            self._ended_mlflow = True
        else:
            self.mlflow_run = active
        mlflow.set_tag("animerec.step", self.step)
        params = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(self.config).items()}
        with contextlib.suppress(Exception):  # a resumed run may already hold these params
            mlflow.log_params(params)
        if self.wandb_mode != "disabled":
            import wandb

            settings = self.wandb_settings
            self.wandb_run = wandb.init(
                project=settings.project,
                entity=settings.entity,
                group=settings.group,
                job_type=self.step,
                name=f"{self.step}-{self.mlflow_run.info.run_id[:8]}",
                config=self.config,
                mode=self.wandb_mode,
                dir=settings.dir or os.getcwd(),
                reinit="finish_previous",
            )
            mlflow.set_tag("wandb.run_id", self.wandb_run.id)
            mlflow.set_tag("wandb.mode", self.wandb_mode)
        logger.info(
            "Step %s: MLflow run %s, W&B %s, store %s",
            self.step,
            self.mlflow_run.info.run_id,
            self.wandb_mode if self.wandb_run is None else f"{self.wandb_mode} run {self.wandb_run.id}",
            self.store.root,
        )
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import mlflow

        failed = exc_type is not None
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if failed else 0)
        if self._ended_mlflow:
            mlflow.end_run(status="FAILED" if failed else "FINISHED")

    # inputs and outputs --------------------------------------------------------------------
    def use(self, ref: str) -> ArtifactVersion:
        """Resolve an input in the local store and record it as this run's input."""
        import mlflow

        version = self.store.resolve(ref)
        self.inputs[version.name] = version.ref
        mlflow.set_tag(f"input.{version.name}", version.ref)
        if self.wandb_run is not None:
            self.wandb_run.config.update({f"input_{version.name}": version.ref}, allow_val_change=True)
            if self.wandb_mode == "online":
                # The exact W&B version this local version was logged as; never ":latest", which may be another.
                wandb_name = version.manifest.get("wandb_artifact")
                if not wandb_name:
                    logger.warning("%s was not logged to W&B online (no wandb_artifact in its manifest); W&B "
                                   "lineage records it by its local reference only.", version.ref)
                else:
                    try:
                        self.wandb_run.use_artifact(wandb_name)
                    except Exception as err:  # lineage is best effort; the local store holds the data
                        logger.warning("Could not declare %s as a W&B input (%s); continuing.", wandb_name, err)
        logger.info("Input %s -> %s", ref, version.path)
        return version

    def use_model(self, ref: str) -> ArtifactVersion:
        """A model by local reference, folder or W&B reference (fetched and cached), recorded as input."""
        from animerec.pretrained import is_wandb_ref, resolve_model

        settings = self.wandb_settings
        online_run = self.wandb_run if self.wandb_mode == "online" else None
        version = resolve_model(ref, self.store, wandb_mode=self.wandb_mode, project=settings.project,
                                entity=settings.entity, run=online_run)
        if online_run is not None and is_wandb_ref(ref):
            # run.use_artifact already declared the W&B artifact; record the local copy only.
            import mlflow

            self.inputs[version.name] = version.ref
            mlflow.set_tag(f"input.{version.name}", version.ref)
            mlflow.set_tag("input.wandb_model", version.metadata.get("wandb_source", str(ref)))
            return version
        return self.use(version.path)

    @contextlib.contextmanager
    def output(
        self, name: str, type: str, *, description: str = "", metadata: dict | None = None
    ) -> Iterator[PendingVersion]:
        """Stage an output; on success store it, then log it to MLflow and W&B."""
        producer = {
            "step": self.step,
            "mlflow_run_id": self.mlflow_run.info.run_id if self.mlflow_run else None,
            "wandb_run_id": self.wandb_run.id if self.wandb_run else None,
            "inputs": dict(self.inputs),
        }
        with self.store.new_version(
            name, type, metadata=metadata, producer=producer, config=self.config
        ) as pending:
            yield pending
        self._log_output(pending.version, description)

    def _log_output(self, version: ArtifactVersion, description: str) -> None:
        import mlflow

        left = log_folder_to_mlflow(version.path, version.name, self.mlflow_copy_max_mb)
        mlflow.set_tag(f"output.{version.name}", version.ref)
        if left:
            mlflow.set_tag(f"output.{version.name}.path", str(version.path))
            logger.info("MLflow run artifacts of %s: %d file(s) over main.mlflow_copy_max_mb=%g are not copied (%s); "
                        "they stay in %s, with their size and sha256 in the logged manifest.json.", version.ref,
                        len(left), self.mlflow_copy_max_mb, ", ".join(left), version.path)
        if self.wandb_run is None:
            return
        import wandb

        artifact = wandb.Artifact(
            version.name,
            type=version.type,
            description=description,
            metadata={**version.metadata, "local_ref": version.ref, "local_path": str(version.path)},
        )
        # A stored version never changes (written once, then renamed into place), so W&B may read the
        # files where they are: no staging copy, and no cache copy after an upload. Its manifest keeps
        # every file's checksum, so the lineage is the same as with copies.
        artifact.add_dir(str(version.path), skip_cache=True, policy="immutable")
        logged = self.wandb_run.log_artifact(artifact)
        self.logged[version.name] = logged
        if self.wandb_mode == "online":
            try:
                logged.wait()
                self.store.update_manifest(version, wandb_artifact=logged.qualified_name)
            except Exception as err:
                logger.warning("W&B artifact %s was logged but its version is not known yet: %s", version.name, err)

    # metrics and media ---------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        mlflow.log_metrics(clean, step=step)
        if self.wandb_run is not None:
            self.wandb_run.log(clean if step is None else {**clean, "epoch": step})

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        import mlflow

        flat = flatten(summary)
        numeric = {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        mlflow.log_metrics(numeric)
        if self.wandb_run is not None:
            self.wandb_run.summary.update(flat)

    def log_image(self, key: str, path: Path) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path="plots")
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Image(str(path))})

    def log_table(self, key: str, frame) -> None:
        import mlflow

        mlflow.log_table(data=frame.reset_index(drop=True), artifact_file=f"tables/{key}.json")
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Table(dataframe=frame.reset_index(drop=True))})

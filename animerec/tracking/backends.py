"""Tracking backends behind one interface: MLflow always, W&B unless it is disabled.

:class:`animerec.tracking.steprun.StepRun` holds a list of :class:`Tracker` objects and calls each in
turn, so no step (and no StepRun method) asks which backends are on. A backend records what it
can: MLflow copies small artifact files and tags inputs and outputs; W&B logs typed artifacts
(by reference to the store's immutable files) and declares inputs when it is online.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import mlflow

from animerec.artifacts import ArtifactStore, ArtifactVersion
from animerec.config import WandbConfig
from animerec.pretrained import link_to_registry

logger = logging.getLogger(__name__)



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


class Tracker:
    """One tracking backend for one step's run. Every method but :meth:`start` may be a no-op.

    ``start`` opens the run; ``links`` returns what other backends should record about it (its
    run ID), and ``link`` records theirs. Inputs and outputs are store versions; metrics are
    floats, ``step`` the epoch when given.
    """

    name = "tracker"
    run_id: str | None = None

    def start(self, step: str, config: Mapping[str, Any], run_name: str | None) -> None:
        raise NotImplementedError

    def finish(self, failed: bool) -> None:
        pass

    def links(self) -> dict[str, str]:
        return {}

    def link(self, tags: Mapping[str, str]) -> None:
        pass

    def record_input(self, version: ArtifactVersion) -> None:
        pass

    def record_output(self, version: ArtifactVersion, description: str) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """``summary`` is flat (dotted keys); values may be strings."""

    def log_image(self, key: str, path: Path) -> None:
        pass

    def log_table(self, key: str, frame) -> None:
        pass

    def describe(self) -> str:
        return f"{self.name} run {self.run_id}"


LINEAGE_KINDS = ("raw_data", "preprocessed_data")  # artifacts whose files are the data a step learns from
CONTEXTS = {"train": "training", "valid": "validation", "test": "testing"}  # by the file's name


def log_datasets(version: ArtifactVersion) -> None:
    """Each data file of ``version`` as an MLflow dataset input of the active run (the run page's lineage):
    named ``<artifact>/<file>``, its source the file in the store, its digest the manifest's sha256, its context
    ``training`` / ``validation`` / ``testing`` for the splits and ``input`` for the rest. Nothing is read again."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for rel, info in sorted(version.manifest.get("files", {}).items()):
        if rel == "manifest.json" or rel.endswith((".json", ".png")):
            continue
        context = CONTEXTS.get(Path(rel).name.split(".")[0], "input")
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local-file source
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(version.path / rel))
        dataset = MetaDataset(source, name=f"{version.name}/{rel}", digest=info["sha256"][:32])  # 36 chars at most
        mlflow.log_input(dataset, context=context, tags={"artifact": version.ref})


class MlflowTracker(Tracker):
    """The active MLflow run (the one ``mlflow run`` made for this step), or a new one it ends."""

    name = "mlflow"

    def __init__(self, copy_max_mb: float | None = None) -> None:
        self.copy_max_mb = copy_max_mb
        self._owns_run = False

    def start(self, step: str, config: Mapping[str, Any], run_name: str | None) -> None:
        run = mlflow.active_run()
        if run is None:
            # Under `mlflow run`, MLFLOW_RUN_ID names the run made for this step and start_run resumes it.
            run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") else run_name)
            self._owns_run = True
        self.run_id = run.info.run_id
        mlflow.set_tag("animerec.step", step)
        params = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(config).items()}
        with contextlib.suppress(Exception):  # a resumed run may already hold these params
            mlflow.log_params(params)

    def finish(self, failed: bool) -> None:
        if self._owns_run:
            mlflow.end_run(status="FAILED" if failed else "FINISHED")

    def links(self) -> dict[str, str]:
        return {"mlflow.run_id": self.run_id or ""}

    def describe(self) -> str:
        return f"MLflow run {self.run_id}"

    def link(self, tags: Mapping[str, str]) -> None:
        mlflow.set_tags(dict(tags))

    def record_input(self, version: ArtifactVersion) -> None:
        mlflow.set_tag(f"input.{version.name}", version.ref)
        if version.type in LINEAGE_KINDS:
            log_datasets(version)

    def record_output(self, version: ArtifactVersion, description: str) -> None:
        left = log_folder_to_mlflow(version.path, version.name, self.copy_max_mb)
        mlflow.set_tag(f"output.{version.name}", version.ref)
        if left:
            mlflow.set_tag(f"output.{version.name}.path", str(version.path))
            logger.info("MLflow run artifacts of %s: %d file(s) over main.mlflow_copy_max_mb=%g are not copied (%s); "
                        "they stay in %s, with their size and sha256 in the logged manifest.json.", version.ref,
                        len(left), self.copy_max_mb, ", ".join(left), version.path)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        mlflow.log_metrics(dict(metrics), step=step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        # MLflow names take letters, digits and _ - . / : and spaces (a blend's name has = and ,)
        numeric = {re.sub(r"[^\w\-./: ]", "_", k): float(v) for k, v in summary.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        mlflow.log_metrics(numeric)

    def log_image(self, key: str, path: Path) -> None:
        mlflow.log_artifact(str(path), artifact_path="plots")

    def log_table(self, key: str, frame) -> None:
        mlflow.log_table(data=frame.reset_index(drop=True), artifact_file=f"tables/{key}.json")


class WandbTracker(Tracker):
    """A W&B run with ``job_type=<step>``, online or offline (``wandb.mode``; never required)."""

    name = "wandb"

    def __init__(self, settings: WandbConfig, mode: str, store: ArtifactStore) -> None:
        if mode not in ("online", "offline"):
            raise ValueError(f"WandbTracker needs wandb.mode online or offline, not {mode!r}.")
        self.settings = settings
        self.mode = mode
        self.store = store
        self.run = None
        self.logged: dict[str, Any] = {}  # W&B artifacts this run logged, by name

    @property
    def online(self) -> bool:
        return self.mode == "online"

    def start(self, step: str, config: Mapping[str, Any], run_name: str | None) -> None:
        import wandb

        settings = self.settings
        self.run = wandb.init(project=settings.project, entity=settings.entity, group=settings.group, job_type=step,
                              name=run_name, config=dict(config), mode=self.mode, dir=settings.dir or os.getcwd(),
                              reinit="finish_previous")
        self.run_id = self.run.id

    def finish(self, failed: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)

    def links(self) -> dict[str, str]:
        return {"wandb.run_id": self.run_id or "", "wandb.mode": self.mode}

    def link(self, tags: Mapping[str, str]) -> None:
        self.run.config.update(dict(tags), allow_val_change=True)

    def describe(self) -> str:
        return f"W&B {self.mode} run {self.run_id}"

    def record_input(self, version: ArtifactVersion) -> None:
        self.run.config.update({f"input_{version.name}": version.ref}, allow_val_change=True)
        if not self.online:
            return  # offline W&B cannot use_artifact; the local reference above is the lineage
        # The exact W&B version this local version was logged as; never ":latest", which may be another.
        wandb_name = version.manifest.get("wandb_artifact")
        if not wandb_name:
            logger.warning("%s was not logged to W&B online (no wandb_artifact in its manifest); W&B lineage records "
                           "it by its local reference only.", version.ref)
            return
        try:
            self.run.use_artifact(wandb_name)
        except Exception as err:  # lineage is best effort; the local store holds the data
            logger.warning("Could not declare %s as a W&B input (%s); continuing.", wandb_name, err)

    def record_output(self, version: ArtifactVersion, description: str) -> None:
        import wandb

        artifact = wandb.Artifact(version.name, type=version.type, description=description,
                                  metadata={**version.metadata, "local_ref": version.ref,
                                            "local_path": str(version.path)})
        # A stored version never changes (written once, then renamed into place), so W&B may read the
        # files where they are: no staging copy, and no cache copy after an upload. Its manifest keeps
        # every file's checksum, so the lineage is the same as with copies.
        artifact.add_dir(str(version.path), skip_cache=True, policy="immutable")
        logged = self.run.log_artifact(artifact)
        self.logged[version.name] = logged
        if self.online:
            try:
                logged.wait()
                self.store.update_manifest(version, wandb_artifact=logged.qualified_name)
            except Exception as err:
                logger.warning("W&B artifact %s was logged but its version is not known yet: %s", version.name, err)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics) if step is None else {**metrics, "epoch": step})

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.run.summary.update(dict(summary))

    def log_image(self, key: str, path: Path) -> None:
        import wandb

        self.run.log({key: wandb.Image(str(path))})

    def log_table(self, key: str, frame) -> None:
        import wandb

        self.run.log({key: wandb.Table(dataframe=frame.reset_index(drop=True))})

    def link_to_registry(self, name: str, registry: str, aliases: list[str]) -> bool:
        """Link the artifact ``name`` logged by this run to the W&B registry (online only)."""

        if not self.online or name not in self.logged:
            return False
        link_to_registry(self.run, self.logged[name], registry, aliases)
        return True

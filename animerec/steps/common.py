"""What every step function shares: the store and a StepRun made from the configuration."""

from __future__ import annotations

from animerec.artifacts import ArtifactStore
from animerec.config import Config
from animerec.steps import STEPS
from animerec.tracking import StepRun


def store_from(cfg: Config) -> ArtifactStore:
    return ArtifactStore(cfg.main.artifact_root, verify=cfg.main.verify_artifacts)


def step_run(step: str, cfg: Config) -> StepRun:
    """A StepRun logging the config sections the step table names for this step."""
    logged = {name: getattr(cfg, name).model_dump() for name in STEPS[step].logs}
    return StepRun(step, logged, store_from(cfg), cfg.wandb,
                   mlflow_copy_max_mb=cfg.main.mlflow_copy_max_mb)


def pinned(cfg: Config, artifact: str) -> str:
    """The exact version the pipeline pinned for ``artifact`` (``inputs.<artifact>``), else its latest."""
    return getattr(cfg.inputs, artifact) or f"{artifact}:latest"

"""What every step function shares: the store and a StepRun made from the configuration."""

from __future__ import annotations

from animerec.artifacts import ArtifactStore
from animerec.steps import STEPS
from animerec.tracking import StepRun, WandbSettings


def store_from(cfg: dict) -> ArtifactStore:
    return ArtifactStore(cfg["main"]["artifact_root"], verify=bool(cfg["main"].get("verify_artifacts")))


def step_run(step: str, cfg: dict) -> StepRun:
    """A StepRun logging the config sections the step table names for this step."""
    logged = {name: cfg[name] for name in STEPS[step].logs if name in cfg}
    return StepRun(step, logged, store_from(cfg), WandbSettings.from_config(cfg.get("wandb")),
                   mlflow_copy_max_mb=cfg["main"].get("mlflow_copy_max_mb"))


def pinned(cfg: dict, artifact: str) -> str:
    """The exact version the pipeline pinned for ``artifact`` (``inputs.<artifact>``), else its latest."""
    return cfg["inputs"].get(artifact) or f"{artifact}:latest"

"""What every step function shares: the store and a StepRun made from the configuration."""

from __future__ import annotations

from animerec.artifacts import ArtifactStore
from animerec.trackers import WandbSettings
from animerec.tracking import StepRun


def store_from(cfg: dict) -> ArtifactStore:
    return ArtifactStore(cfg["main"]["artifact_root"], verify=bool(cfg["main"].get("verify_artifacts")))


def step_run(step: str, cfg: dict, sections: tuple[str, ...]) -> StepRun:
    """A StepRun logging the config sections that matter to this step."""
    logged = {name: cfg[name] for name in sections if name in cfg}
    return StepRun(step, logged, store_from(cfg), WandbSettings.from_config(cfg.get("wandb")),
                   mlflow_copy_max_mb=cfg["main"].get("mlflow_copy_max_mb"))

"""Tracking: one step's run (:mod:`.steprun`) over its backends, MLflow and W&B (:mod:`.backends`)."""

from animerec.pretrained import resolve_wandb_mode
from animerec.tracking.backends import WandbSettings
from animerec.tracking.steprun import StepRun

__all__ = ["StepRun", "WandbSettings", "resolve_wandb_mode"]

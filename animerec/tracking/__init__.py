"""Tracking: one step's run (:mod:`.steprun`) over its backends, MLflow and W&B (:mod:`.backends`)."""

from animerec.pretrained import resolve_wandb_mode
from animerec.tracking.steprun import StepRun

__all__ = ["StepRun", "resolve_wandb_mode"]

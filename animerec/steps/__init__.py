"""Step functions: each takes the composed configuration (a plain dict) and runs one step.

They are what ``components/<step>/run.py`` and the tests call; tracking and artifacts go
through :class:`animerec.tracking.StepRun`.
"""

from __future__ import annotations

from typing import Any, Callable

from animerec.steps.data import download, preprocess
from animerec.steps.recs import rating_recs, similar_anime, similar_users
from animerec.steps.train import train

REGISTRY: dict[str, Callable[[dict], Any]] = {
    "download": download,
    "preprocess": preprocess,
    "train": train,
    "similar_anime": similar_anime,
    "similar_users": similar_users,
    "rating_recs": rating_recs,
}

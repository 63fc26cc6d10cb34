"""The step table: every pipeline step declared once, in pipeline order.

A :class:`Step` names its function (``animerec.steps.<module>.<name>``, imported on first use so
that reading the table stays light), the artifacts it reads and stores, and the config sections
its runs log. ``main.py`` (which steps exist, their order, which outputs pin which inputs), the
``inputs.*`` config keys, each ``components/<step>/run.py`` and the tests all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable


@dataclass(frozen=True)
class Step:
    name: str
    module: str  # animerec.steps.<module> holds a function called like the step
    inputs: tuple[str, ...]  # artifacts read: pinned through the config key inputs.<artifact>
    outputs: tuple[str, ...]  # artifacts stored
    logs: tuple[str, ...]  # config sections logged as the run's parameters

    @property
    def function(self) -> Callable[[Any], Any]:  # takes an animerec.config.Config (which reads this table)
        return getattr(import_module(f"animerec.steps.{self.module}"), self.name)

    def __call__(self, cfg: Any) -> Any:
        return self.function(cfg)


STEPS: dict[str, Step] = {step.name: step for step in (
    Step("download", "data", (), ("raw_anime", "raw_ratings"), ("data",)),
    Step("preprocess", "data", ("raw_anime", "raw_ratings"), ("preprocessed",), ("data",)),
    Step("train", "train", ("preprocessed",), ("model",), ("model", "train", "evaluate")),
    Step("similar_anime", "recs", ("model",), ("similar_anime",), ("recs", "model")),
    Step("similar_users", "recs", ("model",), ("similar_users",), ("recs", "model")),
    Step("rating_recs", "recs", ("model", "similar_users"), ("rating_recs",), ("recs", "model")),
)}

# Every artifact some step reads: each can be pinned with inputs.<artifact>.
INPUTS: tuple[str, ...] = tuple(dict.fromkeys(name for step in STEPS.values() for name in step.inputs))


def upstream_of(artifact: str) -> list[str]:
    """The steps that make ``artifact``, and the steps those need, in pipeline order."""
    needed, wanted = set(), {artifact}
    for step in reversed(STEPS.values()):
        if wanted & set(step.outputs):
            needed.add(step.name)
            wanted |= set(step.inputs)
    return [name for name in STEPS if name in needed]

"""Shared fixtures: an isolated MLflow store and W&B folder, tiny configs, tiny demo data."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pytest

from animerec.config import Config, ModelConfig
from animerec.pipeline import compose_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# AniList (title search, covers) is never the real one here: a closed port unless a test stands one in
os.environ.setdefault("ANIMEREC_ANILIST_API_URL", "http://127.0.0.1:9/graphql")

# Small demo data: enough structure to learn from, small enough for seconds.
TINY_DEMO = [
    "data.demo.num_users=150",
    "data.demo.min_ratings_per_user=20",
    "data.demo.max_ratings_per_user=60",
    "data.demo.min_members=50000",
    "data.min_user_ratings=10",
]


@pytest.fixture(autouse=True, scope="session")
def _isolated_tracking(tmp_path_factory):
    """MLflow tracks into a throwaway sqlite store; W&B never reaches the network."""
    home = tmp_path_factory.mktemp("tracking")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    yield


@functools.lru_cache(maxsize=None)
def composed(*overrides: str) -> Config:
    """``config.yaml`` with Hydra overrides, checked and typed (composed once per set of overrides)."""
    return compose_config(list(overrides), PROJECT_ROOT)


def model_config(*overrides: str, **changes) -> ModelConfig:
    """The model section (the seed preset unless ``model=best``) with Hydra overrides, then ``changes``
    (an ``lr`` dict changes only the keys it names)."""
    model = composed(*overrides).model
    if isinstance(changes.get("lr"), dict):
        changes["lr"] = model.lr.model_copy(update=changes["lr"])
    return model.model_copy(update=changes)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (the OS's pick; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replaced(cfg: Config, **sections: dict) -> Config:
    """``cfg`` with some keys of some sections changed: ``replaced(cfg, recs={"anime": "Naruto"})``."""
    return cfg.model_copy(update={name: getattr(cfg, name).model_copy(update=values) for name, values in sections.items()})


def make_config(tmp_path: Path, *overrides: str, wandb_mode: str = "disabled") -> Config:
    return compose_config(
        [f"main.artifact_root={tmp_path / 'artifacts'}", f"wandb.mode={wandb_mode}", f"wandb.dir={tmp_path}", *overrides],
        PROJECT_ROOT,
    )


@pytest.fixture
def config_factory(tmp_path):
    def factory(*overrides: str, wandb_mode: str = "disabled") -> dict:
        return make_config(tmp_path, *overrides, wandb_mode=wandb_mode)

    return factory


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A model trained once on small demo data: ``(cfg, tmp, train_result)`` (the store is cfg's)."""
    from animerec.steps import STEPS

    tmp = tmp_path_factory.mktemp("demo")
    cfg = make_config(tmp, *TINY_DEMO, "data.demo.num_users=400", "model.embedding_size=32", "model.batch_size=1024",
                      "model.lr.schedule=constant", "model.lr.max_lr=0.01", "model.epochs=12", "train.verbose=0",
                      # similar anime from a small taste blend, chosen by cross-validation (animerec/taste/choice.py)
                      "model.taste.kind=blend", "model.taste.tune_users=100",
                      "model.taste.item_weights.content=[0,0.1]",
                      # the EASE ranking head, its L2 and like-rate chosen by cross-validation (animerec/ranking_cv.py)
                      "model.ranker.kind=ease", "model.ranker.l2=[50,500]", "model.ranker.like_weight=[0,1]")
    STEPS["download"](cfg)
    STEPS["preprocess"](cfg)
    result = STEPS["train"](cfg)
    return cfg, tmp, result

"""The MLflow Model Registry: every trained pyfunc model is a version of ``model.registry_name``.

The ``champion`` alias mirrors the local ``model:best`` (and W&B's ``best``): it points at the
registered version of the model that :func:`animerec.pretrained.update_best_alias` chose on the
valid split. Each registered version carries the local store reference it was logged from and
that store's folder (tags ``animerec.model`` and ``animerec.store``: ``model:v3`` of one store is
not ``model:v3`` of another sharing the tracking server), so the alias can follow ``model:best``
to an earlier version too.

    mlflow models serve -m models:/anime-recommender@champion --env-manager local -p 5001
"""

from __future__ import annotations

import logging

import mlflow
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

CHAMPION = "champion"
MODEL_TAG = "animerec.model"
STORE_TAG = "animerec.store"


def register(model_uri: str, name: str, model_ref: str, store: str):
    """Register ``model_uri`` (``model_ref`` of the local ``store``) as a new version of ``name``."""

    version = mlflow.register_model(model_uri, name, tags={MODEL_TAG: model_ref, STORE_TAG: str(store)})
    logger.info("Registered %s as %s version %s", model_ref, name, version.version)
    return version


def version_of(name: str, model_ref: str, store: str):
    """The newest registered version of ``name`` logged from ``model_ref`` of ``store``, or None."""

    found = MlflowClient().search_model_versions(f"name = '{name}'")
    matching = [v for v in found
                if (v.tags or {}).get(MODEL_TAG) == model_ref and (v.tags or {}).get(STORE_TAG) == str(store)]
    return max(matching, key=lambda v: int(v.version)) if matching else None


def move_champion(name: str, best_ref: str, store: str):
    """Point ``name@champion`` at the registered version of ``best_ref`` in ``store``; returns it (None if unregistered)."""

    version = version_of(name, best_ref, store)
    if version is None:
        logger.info("%s (model:best) was never registered: %s@%s is unchanged", best_ref, name, CHAMPION)
        return None
    MlflowClient().set_registered_model_alias(name, CHAMPION, version.version)
    logger.info("%s@%s -> version %s (%s)", name, CHAMPION, version.version, best_ref)
    return version


def register_and_promote(model_uri: str, name: str, model_ref: str, best_ref: str | None, store: str) -> str:
    """Register the new model, then move the champion alias to model:best's version; returns the new version's URI."""
    version = register(model_uri, name, model_ref, store)
    if best_ref is not None:
        move_champion(name, best_ref, store)
    return f"models:/{name}/{version.version}"

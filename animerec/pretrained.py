"""Which model to use: a local store reference, a model folder, or a W&B artifact; and publishing.

``model.pretrained`` (and the CLI's ``--model``) accepts:

- a local store reference: ``model:latest``, ``model:v3``, ``model:best``;
- a path to a model artifact folder (a store version, or a folder downloaded by hand);
- a W&B artifact: ``entity/project/model:v12``, ``project/model:latest``, a registry path
  ``wandb-registry-model/anime-recommender:best``, or ``wandb:model:latest`` for ``model:latest``
  in the configured project. A bare ``model:latest`` is looked up locally first and in W&B
  only when the local store has no such model and W&B is online.

W&B artifacts are fetched with the public API (or the step's run, which records them as its
input), checked with :meth:`ModelBundle.load`, and cached as a version of ``model`` in the local
store, keyed by the artifact's digest, so a second use downloads nothing.

After training, :func:`update_best_alias` moves the local ``best`` alias to the model version with
the best ``model.best_metric`` (a valid-split metric) among the versions trained on the same data
(``data_fingerprint``) and evaluated with the same settings as the new one, and :func:`link_to_registry` links the W&B artifact to the
registry collection ``model.registry_name`` with ``latest`` (and ``best`` when it is).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from animerec.artifacts import MANIFEST, ArtifactError, ArtifactStore, ArtifactVersion, parse_ref
from animerec.bundle import ModelBundle
from animerec.config import WANDB_MODES
from animerec.errors import UserError

logger = logging.getLogger(__name__)

WANDB_PREFIX = "wandb:"
LOWER_IS_BETTER = ("rmse", "mae", "loss")  # metric names ending so: lower is better


class PretrainedError(UserError, RuntimeError):
    """A model reference that cannot be used; the message says what to use instead."""


def resolve_wandb_mode(mode: str | None) -> str:
    """``online``/``offline``/``disabled``; unset means online with an API key, offline without."""
    if mode is None or str(mode).lower() in ("", "none", "null", "auto"):
        env = os.environ.get("WANDB_MODE")
        if env in WANDB_MODES:
            return env
        if env == "dryrun":
            return "offline"
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return str(mode).lower()


def is_wandb_ref(ref: str) -> bool:
    """W&B when prefixed ``wandb:`` or shaped ``[entity/]project/name:tag`` (not an existing path)."""
    text = str(ref)
    if text.startswith(WANDB_PREFIX):
        return True
    if "/" not in text or Path(text).expanduser().exists() or text.startswith((".", "~", "/")):
        return False
    return ":" in text.rsplit("/", 1)[-1] and text.count("/") <= 2


def qualified_wandb_name(ref: str, project: str | None, entity: str | None) -> str:
    """``entity/project/name:tag`` (or ``project/name:tag`` when no entity is configured)."""
    text = str(ref)[len(WANDB_PREFIX):] if str(ref).startswith(WANDB_PREFIX) else str(ref)
    if ":" not in text.rsplit("/", 1)[-1]:
        text += ":latest"
    if "/" in text:
        return text
    if not project:
        raise PretrainedError(f"W&B reference {ref!r} has no project: set wandb.project or write project/{text}.")
    return f"{entity}/{project}/{text}" if entity else f"{project}/{text}"


def local_choices(store: ArtifactStore, name: str = "model") -> str:
    versions = store.versions(name)
    if not versions:
        return f"the local store {store.root} has no {name} yet (train one with main.steps=[download,preprocess,train])"
    refs = [f"{name}:latest"] + [f"{name}:{alias}" for alias in store.aliases(name)] + [f"{name}:v{v}" for v in versions]
    return "local models: " + ", ".join(refs)


def resolve_model(ref: str, store: ArtifactStore, *, wandb_mode: str, project: str | None = None,
                  entity: str | None = None, run=None) -> ArtifactVersion:
    """The stored model version ``ref`` names, fetching and caching it from W&B when it is a W&B reference.

    ``run`` (an online W&B run) records a W&B artifact as the run's input.
    """

    text = str(ref).strip()
    folder = Path(text).expanduser()
    if not folder.exists() and ("/" in text or "\\" in text) and not is_wandb_ref(text):
        raise PretrainedError(
            f"model.pretrained={text!r}: no such folder. Give a model artifact folder, a local reference "
            f"(model:latest, model:v3) or a W&B reference (entity/project/model:v12); {local_choices(store)}."
        )
    if folder.is_dir():
        if (folder / MANIFEST).is_file():
            return store.resolve(folder)
        if (folder / "model_info.json").is_file():
            return import_folder(folder, store, {"source_path": str(folder.resolve())})
        raise PretrainedError(f"{folder} is a folder but not a model artifact (no {MANIFEST} or model_info.json).")
    if not is_wandb_ref(text):
        name, _tag = parse_ref(text)
        try:
            return store.resolve(text)
        except ArtifactError as err:
            if wandb_mode != "online":
                raise PretrainedError(
                    f"No model {text!r} here: {err} W&B is {wandb_mode}, so it was not looked up there; "
                    f"to use a W&B model, log in (wandb login, or set WANDB_API_KEY) and name it "
                    f"entity/project/{text}, or use a local model ({local_choices(store, name)})."
                ) from None
            logger.info("%s is not in the local store; looking it up in W&B", text)
    if wandb_mode != "online":
        raise PretrainedError(
            f"model.pretrained={text!r} names a W&B artifact, but W&B is {wandb_mode} here. Log in first "
            f"(wandb login, or export WANDB_API_KEY=...; wandb.mode=online), or use a local model instead: "
            f"{local_choices(store)}."
        )
    version = fetch_wandb(qualified_wandb_name(text, project, entity), store, run=run)
    ModelBundle.load(version.path)  # self-describing: fails clearly on a mismatched artifact
    return version


def fetch_wandb(name: str, store: ArtifactStore, *, run=None, api=None) -> ArtifactVersion:
    """Download W&B artifact ``name`` (once; cached by digest) into the store's ``model``."""
    try:
        if run is not None:
            artifact = run.use_artifact(name, type="model")
        else:
            import wandb

            artifact = (api or wandb.Api()).artifact(name, type="model")
    except Exception as err:
        raise PretrainedError(
            f"W&B could not give the model artifact {name!r}: {err}. Check the entity/project/name:alias "
            f"(wandb artifact ls <entity>/<project> lists them) and that your API key can read it."
        ) from None
    stored = cached_model(store, wandb_digest=artifact.digest)
    if stored is not None:
        logger.info("W&B %s is cached as %s", artifact.qualified_name, stored.ref)
        return stored
    logger.info("Downloading W&B %s into %s", artifact.qualified_name, store.root)
    metadata = {"wandb_source": artifact.qualified_name, "wandb_digest": artifact.digest}
    with store.new_version("model", "model", metadata=metadata, producer={"step": "pretrained", **metadata}) as pending:
        artifact.download(root=str(pending.path))
        _keep_origin_manifest(pending.path)
    return pending.version


def cached_model(store: ArtifactStore, **metadata) -> ArtifactVersion | None:
    """The newest stored model whose manifest metadata has all these values, if any."""
    for number in reversed(store.versions("model")):
        stored = store.resolve(f"model:v{number}")
        if all(stored.metadata.get(key) == value for key, value in metadata.items()):
            return stored
    return None


def import_folder(folder: Path, store: ArtifactStore, metadata: dict) -> ArtifactVersion:
    """Copy a model folder that has no store manifest into the store (once per identical folder)."""

    bundle = ModelBundle.load(folder)  # check before copying anything
    key = bundle.info.get("encoders_sha256")
    stored = cached_model(store, source_path=metadata.get("source_path"), encoders_sha256=key)
    if stored is not None:
        return stored
    with store.new_version("model", "model", metadata={**metadata, "encoders_sha256": key},
                           producer={"step": "pretrained", **metadata}) as pending:
        shutil.copytree(folder, pending.path, dirs_exist_ok=True)
        _keep_origin_manifest(pending.path)
    return pending.version


def _keep_origin_manifest(path: Path) -> None:
    """The producer's manifest travels as ``origin_manifest.json``; the store writes its own."""
    if (path / MANIFEST).exists():
        (path / MANIFEST).rename(path / "origin_manifest.json")


# publishing ---------------------------------------------------------------------------------------
def stored_metrics(version: ArtifactVersion) -> dict:
    path = version.path / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def metric_of(version: ArtifactVersion, metric: str) -> float | None:
    value = stored_metrics(version).get(metric)
    return float(value) if isinstance(value, (int, float)) and value == value else None


def comparable(metrics: dict, like: dict) -> bool:
    """Trained on the same data (``data_fingerprint``) and evaluated with the same settings."""
    return all(metrics.get(key) == like.get(key) for key in ("data_fingerprint", "evaluation"))


def update_best_alias(store: ArtifactStore, metric: str, name: str = "model",
                      like: ArtifactVersion | None = None) -> ArtifactVersion | None:
    """Point ``<name>:best`` at the version with the best ``metric`` (lower is better for errors and losses).

    With ``like`` (the model just trained), only versions comparable with it compete: the same
    ``data_fingerprint`` and ``evaluation`` settings in their metrics.json. Done under the store's
    alias lock, so two trainers finishing at once cannot each pick from a list that lacks the
    other's model and overwrite a better choice.
    """
    lower = metric.endswith(LOWER_IS_BETTER)
    reference = stored_metrics(like) if like is not None else None
    with store.lock(name):
        scored = []
        for number in store.versions(name):
            version = store.resolve(f"{name}:v{number}")
            if reference is not None and not comparable(stored_metrics(version), reference):
                continue
            value = metric_of(version, metric)
            if value is not None:
                scored.append((-value if lower else value, number, version))
        if not scored:
            return None
        _key, number, best = max(scored, key=lambda item: (item[0], item[1]))
        store.write_alias(name, "best", number)
    logger.info("%s:best -> v%d (%s %.4f)", name, number, metric, metric_of(best, metric))
    return best


def link_to_registry(run, artifact, registry_name: str, aliases: list[str]) -> None:
    """Link a logged W&B artifact to the model registry collection (online runs only; best effort)."""
    target = registry_name if "/" in registry_name else f"wandb-registry-model/{registry_name}"
    try:
        run.link_artifact(artifact, target_path=target, aliases=aliases)
        logger.info("Linked %s to the W&B registry %s with aliases %s", artifact.name, target, ", ".join(aliases))
    except Exception as err:
        logger.warning("Could not link the model to the W&B registry %s (%s); it is logged to the run.", target, err)

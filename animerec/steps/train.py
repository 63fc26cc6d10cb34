"""The train step: fit the model on ``preprocessed``, evaluate it, write the ``model`` artifact."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import yaml

from animerec.artifacts import read_arrays
from animerec.bundle import write_bundle
from animerec.checkpoint import EpochCheckpoint
from animerec.config import Config, EvaluateConfig, ModelConfig
from animerec.errors import ConfigError
from animerec.evaluation import evaluate, valid_metrics
from animerec.memory import phase
from animerec.model import build_model, scorer_from_model
from animerec.plots import figure
from animerec.pretrained import update_best_alias
from animerec.pyfunc import log_pyfunc
from animerec.ranking_cv import fit_ranker
from animerec.registry import register_and_promote
from animerec.steps.common import pinned, step_run
from animerec.strategy import make_strategy, trainer_for
from animerec.taste.choice import fit_taste
from animerec.trainer import fit
from animerec.training.sampling import train_data

logger = logging.getLogger(__name__)


SPLIT_COLUMNS = ["user_index", "anime_index", "rating", "rating_scaled"]  # what training and evaluation read


def load_split(version, name: str) -> pd.DataFrame:
    """One split's index, rating and scaled-rating columns (13 bytes a row; the raw IDs stay on disk)."""
    return pd.read_parquet(version.file(f"{name}.parquet"), columns=SPLIT_COLUMNS)


def data_fingerprint(version) -> str:
    """sha256 over the split files' sha256s: equal for models trained on the same data."""

    files = version.manifest.get("files", {})
    parts = [f"{name}={files[name]['sha256']}" for name in sorted(files)
             if name in ("train.parquet", "valid.parquet", "test.parquet", "encoders.npz")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest() if parts else f"unhashed:{version.ref}"


def plot_history(history: pd.DataFrame, path) -> None:
    with figure(path, ncols=2, figsize=(10, 3.6)) as (_fig, (ax, ax_lr)):
        ax.plot(history["epoch"], history["loss"], marker="o", label="train")
        ax.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title("Loss")
        ax.legend()
        ax_lr.plot(history["epoch"], history["lr"], marker=".", color="#c0392b")
        ax_lr.set_xlabel("epoch")
        ax_lr.set_title("Learning rate")


def publish(run, model_cfg: ModelConfig, version):
    """Move the local ``best`` alias; link the W&B artifact to the registry when online; returns model:best."""

    metric = model_cfg.best_metric
    best = update_best_alias(run.store, metric, like=version)
    if best is None:
        logger.warning("No stored model has metric %r in its metrics.json; model:best is not set.", metric)
    aliases = ["latest"] + (["best"] if best is not None and best.version == version.version else [])
    if run.wandb is not None and model_cfg.registry_name:
        run.wandb.link_to_registry("model", model_cfg.registry_name, aliases)  # online only
    return best


def train(cfg: Config) -> dict:
    """Train and evaluate; stores ``model`` and returns its reference and metrics."""
    with step_run("train", cfg) as run:
        pre = run.use(pinned(cfg, "preprocessed"))
        with phase("reading the splits"):
            train_df, valid_df, test_df = (load_split(pre, s) for s in ("train", "valid", "test"))
        if train_df.empty:
            raise ConfigError(
                f"The training split of {pre.ref} is empty: nothing to train on. Lower data.test_fraction / "
                f"data.valid_fraction or data.min_user_ratings and rerun preprocess."
            )
        return fit_and_store(run, cfg, pre, train_df, valid_df, test_df)


def attach_ranker(scorer, model_cfg: ModelConfig, eval_cfg: EvaluateConfig, train_df, valid_df, num_users: int, num_anime: int,
                  seed: int, bundle_scale: dict | None = None):
    """Fit the ranking head the model config asks for onto ``scorer`` (chosen by cross-validation).

    Returns ``(valid_found, report)``: with ``bundle_scale``, the valid metrics of the scorer with
    the head fitted on train only (taken before the refit on train + valid, then that head is
    dropped), and the ranker's report; ``(None, None)`` without a ranker.
    """

    ranker_cfg = model_cfg.ranker
    if ranker_cfg.kind == "none":
        return None, None

    def score_tuned(tuned):
        return valid_metrics(dataclasses.replace(scorer, ranker=tuned), bundle_scale, train_df, valid_df, eval_cfg)

    fitted = fit_ranker(ranker_cfg, train_df, valid_df, num_users, num_anime, k=int(eval_cfg.k),
                        relevance_threshold=float(eval_cfg.relevance_threshold), seed=seed, folds=int(eval_cfg.folds),
                        score_tuned=score_tuned if bundle_scale is not None and len(valid_df) else None)
    scorer.ranker = fitted.ranker
    return fitted.tuned_result, fitted.report


def attach_taste(model_cfg: ModelConfig, eval_cfg: EvaluateConfig, train_df, valid_df, num_users: int, num_anime: int,
                 anime: pd.DataFrame, seed: int):
    """Fit the similar-anime / similar-users index the model config asks for (``model.taste``), or None."""
    taste_cfg = model_cfg.taste
    if taste_cfg.kind == "none":
        return None

    return fit_taste(taste_cfg, train_df, valid_df, num_users, num_anime, anime, k=int(eval_cfg.k),
                     relevance_threshold=float(eval_cfg.relevance_threshold), seed=seed, folds=int(eval_cfg.folds))


def epoch_checkpoint(store, pre, cfg: Config, trainer: str):
    """The checkpoint of this exact training (input version, model and train settings), or None.

    Rerunning the same command finds it and continues; ``train.resume=false`` deletes it first.
    """

    if trainer == "keras":
        logger.info("train.trainer=keras: no epoch checkpoints (they need the custom loop: train.trainer=lazy).")
        return None
    train_cfg = {k: v for k, v in cfg.train.model_dump().items() if k not in ("verbose", "resume")}
    key = json.dumps({"input": str(pre.path), "model": cfg.model.model_dump(), "train": train_cfg, "trainer": trainer},
                     sort_keys=True, default=str)
    checkpoint = EpochCheckpoint(store.root / ".checkpoints" / f"train-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz")
    if not cfg.train.resume:
        checkpoint.clear()
    return checkpoint


@dataclass
class Fitted:
    """What training made: the Keras model, its numpy scorer (with the ranking head), the similar-anime index,
    the training history, and what the valid split and the choices reported."""

    model: Any
    scorer: Any
    history: Any
    taste: Any
    valid_found: dict | None
    ranker_report: dict | None
    summary: dict  # trainer, strategy, seconds


def fit_and_store(run, cfg: Config, pre, train_df, valid_df, test_df) -> dict:
    """Train, evaluate, store, publish: each a function of its own."""
    encoders = read_arrays(pre.file("encoders.npz"))
    scale = json.loads(pre.file("scale.json").read_text())
    anime_table = pd.read_parquet(pre.file("anime.parquet"))
    checkpoint, fitted = train_model(run, cfg, pre, train_df, valid_df, encoders, scale, anime_table)
    metrics = evaluate_model(cfg, pre, fitted, train_df, valid_df, test_df, scale, len(encoders["anime_ids"]))
    out = store_model(run, cfg, pre, fitted, metrics, encoders, scale, anime_table, (train_df, valid_df, test_df))
    if checkpoint is not None:
        checkpoint.clear()  # the model is stored: a rerun trains a new one
    return publish_model(run, cfg, out.version, metrics)


def train_model(run, cfg: Config, pre, train_df, valid_df, encoders, scale: dict, anime_table) -> tuple:
    """``(checkpoint, Fitted)``: the network (resuming from its epoch checkpoint), then the similar-anime index
    and the ranking head, each chosen by cross-validation."""
    import keras

    model_cfg, train_cfg = cfg.model, cfg.train
    seed = int(train_cfg.seed)
    keras.utils.set_random_seed(seed)
    num_users, num_anime = len(encoders["user_ids"]), len(encoders["anime_ids"])
    strategy, decision = make_strategy(train_cfg.strategy, train_cfg.tpu_address)
    trainer = trainer_for(train_cfg.trainer, strategy, decision)
    run.log_summary({"strategy": decision.kind, "trainer": trainer})
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(model_cfg, num_users, num_anime)
    started = time.perf_counter()
    train_split = train_data(train_df, model_cfg, num_anime, seed, known=(valid_df,))
    valid_split = train_data(valid_df, model_cfg, num_anime, seed + 1, known=(train_df,))
    checkpoint = epoch_checkpoint(run.store, pre, cfg, trainer)
    with phase("training"):
        history = fit(model, train_split, valid_split, model_cfg, trainer=trainer, strategy=strategy, seed=seed,
                      verbose=int(train_cfg.verbose), checkpoint=checkpoint,
                      on_epoch_end=lambda row: run.log_metrics({k: v for k, v in row.items() if k != "epoch"},
                                                               step=row["epoch"]))
    del train_split, valid_split
    scorer = scorer_from_model(model)
    # The taste index before the ranking head: each builds an anime x anime matrix, and this way the
    # head's (1.2 GB at full size) is not held while the taste index builds its own.
    taste = attach_taste(model_cfg, cfg.evaluate, train_df, valid_df, num_users, num_anime, anime_table, seed)
    with phase("the ranking head"):
        valid_found, ranker_report = attach_ranker(scorer, model_cfg, cfg.evaluate, train_df, valid_df, num_users,
                                                   num_anime, seed, scale)
    summary = {"train_seconds": time.perf_counter() - started, "trainer": trainer, "strategy": decision.kind}
    return checkpoint, Fitted(model, scorer, history, taste, valid_found, ranker_report, summary)


def evaluate_model(cfg: Config, pre, fitted: Fitted, train_df, valid_df, test_df, scale: dict, num_anime: int) -> dict:
    """Test metrics next to the baselines, the valid split's, and every choice the cross-validations made."""
    with phase("evaluation"):
        metrics = evaluate(fitted.scorer, scale, train_df, test_df, num_anime, cfg.evaluate, valid=valid_df,
                           valid_found=fitted.valid_found)
    history = fitted.history
    metrics.update({"data_fingerprint": data_fingerprint(pre), **fitted.summary, "epochs_run": len(history.epochs),
                    "best_epoch": history.best_epoch, "epochs_planned": history.planned_epochs,
                    "batch_size": history.batch_size})
    if fitted.taste is not None:
        metrics["taste"] = fitted.taste.report
    if fitted.ranker_report is not None:
        metrics["ranker"] = fitted.ranker_report
        metrics.update({f"ranker_{key}": value for key, value in fitted.ranker_report["chosen"].items()})
    k = cfg.evaluate.k
    popular = metrics["baselines"]["popularity"]
    logger.info("Test: RMSE %.3f MAE %.3f recall@%d %.4f NDCG@%d %.4f | popularity recall %.4f NDCG %.4f",
                metrics.get("rmse", float("nan")), metrics.get("mae", float("nan")), k, metrics[f"recall_at_{k}"], k,
                metrics[f"ndcg_at_{k}"], popular[f"recall_at_{k}"], popular[f"ndcg_at_{k}"])
    return metrics


def store_model(run, cfg: Config, pre, fitted: Fitted, metrics: dict, encoders, scale: dict, anime_table, frames):
    """The ``model`` artifact (written whole or not at all): the Keras file, the bundle, history, metrics, config."""
    model, scorer = fitted.model, fitted.scorer
    ratings = {name: np.concatenate([f[name].to_numpy() for f in frames]) for name in ("user_index", "anime_index", "rating")}
    with phase("the model artifact"), run.output(
            "model", "model", description="Collaborative-filtering model and its embeddings",
            metadata={k: v for k, v in metrics.items() if not isinstance(v, dict)}) as out:
        model.save(out.path / "model.keras")
        weights = {"kernel": scorer.kernel, "bias": scorer.bias}
        if model.use_bias:
            weights.update(user_bias=model.user_bias.get_weights()[0], anime_bias=model.anime_bias.get_weights()[0])
        if model.preference:
            weights.update(preference_bias=model.preference_bias.get_weights()[0])
        write_bundle(
            out.path, scorer_arrays=weights, user_emb=model.user_embedding.get_weights()[0],
            anime_emb=model.anime_embedding.get_weights()[0], activation=model.activation,
            user_ids=encoders["user_ids"], anime_ids=encoders["anime_ids"], scale=scale,
            anime=anime_table, ratings=ratings,
            extra_info={"trained_on": pre.ref, "model_name": cfg.model.name},
            ranker=scorer.ranker, taste=fitted.taste.index if fitted.taste is not None else None,
        )
        frame = fitted.history.frame()
        frame.to_csv(out.path / "history.csv", index=False)
        optional("the loss-curve plot", plot_history, frame, out.path / "loss_curve.png")
        (out.path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (out.path / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    return out


def publish_model(run, cfg: Config, version, metrics: dict) -> dict:
    """After the model is stored, the extras: a failure here only costs an extra, never the trained model."""
    optional("the metrics summary", run.log_summary, metrics)
    if (version.path / "loss_curve.png").is_file():
        optional("the loss-curve image", run.log_image, "loss_curve", version.path / "loss_curve.png")
    best = optional("the best alias and registry link", publish, run, cfg.model, version)
    with phase("the MLflow pyfunc model"):
        model_uri = optional("the MLflow pyfunc model", log_model_uri, version.path, cfg.main.mlflow_copy_max_mb)
    registered = None
    if model_uri is not None and cfg.model.registry_name:
        registered = optional("the MLflow Model Registry entry", register_and_promote, model_uri,
                              cfg.model.registry_name, version.ref, best.ref if best is not None else None,
                              str(run.store.root))
    return {"model": version.ref, "metrics": metrics, "model_uri": model_uri, "registered_uri": registered}


def log_model_uri(path, copy_max_mb: float | None = None) -> str:
    model_uri = log_pyfunc(path, copy_max_mb=copy_max_mb)
    logger.info("MLflow model: %s (serve with: mlflow models serve -m %s --env-manager local)", model_uri, model_uri)
    return model_uri


def optional(what: str, fn, *args):
    """Run an extra that must not cost the trained model: a failure is logged as a warning."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - any failure of an extra is only a warning
        logger.warning("Could not write %s (%s: %s); the model artifact is stored and usable.",
                       what, type(err).__name__, err)
        return None

"""Turning configuration into step runs.

``main.py`` (a Hydra app) calls :func:`run_pipeline`, which runs each selected step as
``mlflow.run(components/<step>, env_manager="local")`` under one parent MLflow run. Each
component's ``run.py`` calls :func:`step_main`, which composes the same ``config.yaml`` with the
overrides it was given and calls the step's function in :mod:`animerec.steps`. Parameters are
thus declared once, with their types, in ``config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from animerec.errors import ConfigError, UserError

logger = logging.getLogger(__name__)

# Pipeline order. A step is available once its component folder and step function exist.
STEPS: tuple[str, ...] = ("download", "preprocess", "train", "similar_anime", "similar_users", "rating_recs")


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging for the ``animerec`` loggers (named loggers; the root logger stays quiet)."""
    package = logging.getLogger("animerec")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False


def step_functions() -> dict[str, Callable[[dict], Any]]:
    from animerec import steps

    return steps.REGISTRY


def available_steps(project_root: Path) -> list[str]:
    functions = step_functions()
    return [s for s in STEPS if s in functions and (project_root / "components" / s / "MLproject").is_file()]


def parse_steps(value: Any, available: Sequence[str]) -> list[str]:
    """``"all"``, ``"download,preprocess"`` or a list -> the steps in pipeline order."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return list(available)
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ConfigError(f"main.steps: unknown step(s) {', '.join(unknown)}; the steps are {', '.join(STEPS)}.")
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(
            f"main.steps: step(s) {', '.join(missing)} are not available in this version yet; "
            f"available: {', '.join(available)}."
        )
    if not names:
        raise ConfigError("main.steps is empty; name at least one step or use 'all'.")
    return [s for s in STEPS if s in names]


def to_container(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg


def compose_config(overrides: Sequence[str], config_dir: Path) -> dict:
    """The pipeline configuration (``config.yaml`` + overrides) as a plain dict."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"Bad configuration override: {err}") from None
    return to_container(cfg)


TRAINING_STEPS = ("download", "preprocess", "train")


def skip_for_pretrained(cfg: dict, steps: list[str]) -> list[str]:
    """With ``model.pretrained`` set, check the model once and drop the steps that would make one.

    A model artifact carries its encoders, anime table and ratings, so the data steps are not
    needed either.
    """
    ref = cfg["model"].get("pretrained")
    if not ref:
        return steps
    from animerec.artifacts import ArtifactStore
    from animerec.pretrained import resolve_model
    from animerec.tracking import resolve_wandb_mode

    wandb_cfg = cfg.get("wandb") or {}
    version = resolve_model(ref, ArtifactStore(cfg["main"]["artifact_root"]), wandb_mode=resolve_wandb_mode(
        wandb_cfg.get("mode")), project=wandb_cfg.get("project"), entity=wandb_cfg.get("entity"))
    skipped = [s for s in steps if s in TRAINING_STEPS]
    if skipped:
        logger.info("model.pretrained=%s (%s): skipping %s; the model artifact carries its encoders, anime table "
                    "and ratings.", ref, version.path, ", ".join(skipped))
    return [s for s in steps if s not in TRAINING_STEPS]


def run_pipeline(cfg: dict, overrides: Sequence[str], project_root: Path) -> dict:
    """Run the selected steps as MLflow project runs, children of one parent MLflow run.

    Returns a summary: the parent run, and when ``train`` ran, the model it stored and that
    model's test metrics (what a sweep's summary table shows).
    """
    import mlflow

    from animerec.artifacts import ArtifactStore

    steps = parse_steps(cfg["main"]["steps"], available_steps(project_root))
    steps = skip_for_pretrained(cfg, steps)
    if not steps:
        logger.info("Nothing to run.")
        return {}
    if not os.environ.get("MLFLOW_RUN_ID") and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        mlflow.set_experiment(cfg["main"]["experiment_name"])
    # Steps run inside their component folders: relative paths are made absolute here, so that
    # every step sees the same store and W&B folder as the user's working directory.
    root = Path(cfg["main"]["artifact_root"]).expanduser().absolute()
    models_before = set(ArtifactStore(root).versions("model"))
    wandb_dir = Path(cfg["wandb"].get("dir") or ".").expanduser().absolute()
    with mlflow.start_run(run_name="pipeline") as parent:
        parent_id = parent.info.run_id
        mlflow.set_tag("animerec.steps", ",".join(steps))
        fixed = {"wandb.group": f"pipeline-{parent_id[:8]}", "main.artifact_root": str(root), "wandb.dir": str(wandb_dir)}
        step_overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+") not in {*fixed, "main.steps"}]
        step_overrides += [f"{key}={value}" for key, value in fixed.items()]
        logger.info("Pipeline run %s: steps %s", parent_id, ", ".join(steps))
        for step in steps:
            logger.info("=== step %s ===", step)
            submitted = mlflow.projects.run(
                str(project_root / "components" / step),
                entry_point="main",
                parameters={"overrides": shlex.join(step_overrides)},
                env_manager="local",
                run_name=step,
                experiment_id=parent.info.experiment_id,
            )
            if submitted.get_status() != "FINISHED":
                raise RuntimeError(f"Step {step} ended with status {submitted.get_status()}.")
    summary: dict = {"mlflow_run_id": parent_id}
    new_models = sorted(set(ArtifactStore(root).versions("model")) - models_before)
    if "train" in steps and new_models:
        summary.update(model_summary(ArtifactStore(root).resolve(f"model:v{new_models[-1]}")))
    return summary


def model_summary(version) -> dict:
    """A stored model's reference and headline test metrics, flat."""
    import json

    metrics = json.loads(version.file("metrics.json").read_text(encoding="utf-8"))
    row = {"model": version.ref}
    row.update({k: metrics[k] for k in ("rmse", "mae", "recall_at_10", "ndcg_at_10", "train_seconds") if k in metrics})
    popularity = metrics.get("baselines", {}).get("popularity", {})
    row.update({f"popularity_{k}": v for k, v in popularity.items() if k in ("recall_at_10", "ndcg_at_10")})
    return row


def step_main(step: str, config_dir: Path, argv: Sequence[str] | None = None) -> int:
    """What each ``components/<step>/run.py`` runs: parse arguments, compose config, run the step."""
    parser = argparse.ArgumentParser(
        prog=f"components/{step}/run.py",
        description=f"Run the '{step}' step of the anime recommender pipeline on its own. "
        f"Every option of config.yaml can be overridden, as with main.py.",
        epilog=f"Example: python components/{step}/run.py --overrides \"data.min_user_ratings=5 wandb.mode=disabled\"",
    )
    parser.add_argument(
        "--overrides", default="",
        help="Hydra overrides for config.yaml, separated by spaces (quote values that hold spaces).",
    )
    parser.add_argument("--print-config", action="store_true", help="print the composed configuration and exit")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = compose_config(shlex.split(args.overrides), config_dir)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(cfg, sort_keys=False))
            return 0
        step_functions()[step](cfg)
    except UserError as err:
        print(f"\nerror: {step}: {err}", file=sys.stderr)
        return 2
    return 0

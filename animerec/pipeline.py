"""Turning configuration into step runs.

``main.py`` (a Hydra app) calls :func:`run_pipeline`, which runs each selected step as
``mlflow.run(components/<step>, env_manager="local")`` under one parent MLflow run. Each
component's ``run.py`` calls :func:`step_main`, which composes the same ``config.yaml`` with the
overrides it was given and calls the step's function in :mod:`animerec.steps`. Each parameter is
declared once: its type and range in :mod:`animerec.config`, its value in ``config.yaml`` (the filters':
their :class:`~animerec.config.ItemFilter` defaults, registered in Hydra's ConfigStore).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlflow
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from animerec.artifacts import ArtifactStore
from animerec.config import Config, ItemFilter, check_source, section_at, validate_config
from animerec.console import native_stderr_quiet, setup_logging
from animerec.errors import ConfigError, UserError
from animerec.launch import quote_value, split_overrides
from animerec.pretrained import is_wandb_ref, resolve_model, resolve_wandb_mode
from animerec.steps import INPUTS, STEPS, upstream_of

logger = logging.getLogger(__name__)


def to_container(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg


SCHEMA_DEFAULTS = "animerec_defaults"  # config.yaml's first default: the schema's own defaults


def register_schema_defaults() -> None:
    """Put the keys whose default the schema declares (the filters: :class:`~animerec.config.ItemFilter`'s fields)
    in Hydra's ConfigStore, where ``config.yaml`` finds them, so a default is written once and every key can be
    overridden; ``main.py`` calls this before Hydra composes, :func:`compose_config` too."""
    ConfigStore.instance().store(name=SCHEMA_DEFAULTS, node={"recs": ItemFilter().model_dump()})


def compose_config(overrides: Sequence[str], config_dir: Path, *, validate: bool = True) -> Config | dict:
    """The pipeline configuration (the schema's defaults, ``config.yaml`` and the overrides), checked against
    the schema and typed (a :class:`~animerec.config.Config`); with ``validate=False``, the composed plain dict."""
    register_schema_defaults()
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"bad configuration override: {one_line(err)}{allowed_keys(err)}") from None
    cfg = to_container(cfg)
    return validate_config(cfg) if validate else cfg


def allowed_keys(err: BaseException) -> str:
    """For an unknown key (OmegaConf's error, under Hydra's, names it), the keys its section does have."""
    full_key = getattr(err.__cause__, "full_key", None)
    parents = str(full_key).split(".")[:-1] if full_key else None
    section = section_at(parents, Config) if parents is not None else None
    if section is None:
        return ""
    return f" Allowed keys of {'.'.join(parents) or 'the config'}: {', '.join(section.model_fields)}."


def one_line(err: BaseException) -> str:
    """An exception's message as one paragraph (Hydra's span several lines)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def skip_for_pretrained(cfg: Config, steps: list[str]) -> tuple[list[str], str | None]:
    """With ``model.pretrained`` set, check the model once and drop the steps that would make one.

    A model artifact carries its encoders, anime table and ratings, so the data steps are not
    needed either. Returns the steps left and the exact local version to pin (None for a W&B
    reference, which each step resolves itself so that W&B records it as the run's input).
    """
    ref = cfg.model.pretrained
    if not ref:
        return steps, None

    version = resolve_model(ref, ArtifactStore(cfg.main.artifact_root), wandb_mode=resolve_wandb_mode(
        cfg.wandb.mode), project=cfg.wandb.project, entity=cfg.wandb.entity)
    making = upstream_of("model")
    skipped = [s for s in steps if s in making]
    if skipped:
        logger.info("model.pretrained=%s (%s): skipping %s; the model artifact carries its encoders, anime table "
                    "and ratings.", ref, version.path, ", ".join(skipped))
    return [s for s in steps if s not in making], None if is_wandb_ref(ref) else str(version.path)


ERROR_TAG = "animerec.error"


def run_pipeline(cfg: Mapping[str, Any] | Config, overrides: Sequence[str], project_root: Path) -> dict:
    """Run the selected steps as MLflow project runs, children of one parent MLflow run.

    The configuration is checked against the schema before any step starts. Each step gets the
    exact versions the earlier steps of this run produced (``inputs.*``), never ``:latest``. A
    step that fails on a user error records its message on its MLflow run; it comes back here as a
    :class:`UserError` naming the step. Returns a summary: the parent run, and when ``train`` ran,
    the model it stored and that model's test metrics (what a sweep's summary table shows), as a
    :class:`Summary` whose float value is the objective of an Optuna sweep.
    """

    cfg = validate_config(cfg)
    steps = list(cfg.main.steps)
    if "download" in steps:
        check_source(cfg.data)
    steps, pinned_model = skip_for_pretrained(cfg, steps)
    if not steps:
        logger.info("Nothing to run.")
        return Summary(objective=cfg.model.best_metric)
    if not os.environ.get("MLFLOW_RUN_ID") and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        mlflow.set_experiment(cfg.main.experiment_name)
    # Steps run inside their component folders: relative paths are made absolute here, so that
    # every step sees the same store and W&B folder as the user's working directory.
    root = Path(cfg.main.artifact_root).expanduser().absolute()
    wandb_dir = Path(cfg.wandb.dir or ".").expanduser().absolute()
    pins: dict[str, str] = {"inputs.model": pinned_model} if pinned_model else {}
    produced: dict[str, str] = {}
    with mlflow.start_run(run_name="pipeline") as parent:
        parent_id = parent.info.run_id
        mlflow.set_tag("animerec.steps", ",".join(steps))
        fixed = {"wandb.group": f"pipeline-{parent_id[:8]}", "main.artifact_root": str(root), "wandb.dir": str(wandb_dir)}
        if cfg.recs.ratings_file:
            fixed["recs.ratings_file"] = str(Path(cfg.recs.ratings_file).expanduser().absolute())
        logger.info("Pipeline run %s: steps %s", parent_id, ", ".join(steps))
        timings: dict[str, tuple[str, float]] = {}
        try:
            for step in steps:
                logger.info("=== step %s ===", step)
                values = {**fixed, **pins}
                step_overrides = [o for o in overrides
                                  if o.split("=", 1)[0].lstrip("+~") not in {*values, "main.steps"}]
                step_overrides += [f"{key}={quote_value(value)}" for key, value in values.items()]
                started, timings[step] = time.perf_counter(), ("failed", 0.0)
                outputs = run_step(project_root, step, step_overrides, parent.info.experiment_id)
                timings[step] = ("succeeded", time.perf_counter() - started)
                produced.update(outputs)
                pins.update({f"inputs.{name}": ref for name, ref in outputs.items() if name in INPUTS})
        finally:
            summary = Summary({"mlflow_run_id": parent_id}, objective=cfg.model.best_metric)
            if "model" in produced and "train" in steps:
                summary.update(model_summary(ArtifactStore(root).resolve(produced["model"])))
            report = summary_text(summary, timings, root, cfg.model.registry_name)
            print(report, flush=True)
            mlflow.log_text(report, "summary.txt")
            mlflow.log_metrics({f"{k}_test": v for k, v in summary.items() if k in SUMMARY_METRICS})
            settings = cfg.wandb.model_copy(update=dict(group=fixed["wandb.group"], dir=str(wandb_dir)))
            summary_to_wandb(settings, summary, report)
    return summary


def summary_to_wandb(settings, summary: Mapping[str, Any], report: str) -> None:
    """The pipeline's summary as a W&B run of its own (``job_type=pipeline``, in the steps' group), unless W&B is
    disabled; a failure here costs only this extra."""
    mode = resolve_wandb_mode(settings.mode)
    if mode == "disabled":
        return
    from animerec.tracking.backends import WandbTracker

    try:
        tracker = WandbTracker(settings, mode, None)
        tracker.start("pipeline", {}, "pipeline")
        tracker.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        tracker.run.summary["report"] = report
        tracker.finish(False)
    except Exception as err:  # noqa: BLE001 - the steps logged everything already
        logger.warning("Could not log the summary to W&B (%s: %s).", type(err).__name__, err)


SUMMARY_METRICS = ("recall_at_10", "ndcg_at_10", "rmse", "popularity_recall_at_10", "popularity_ndcg_at_10")


def summary_text(summary: Mapping[str, Any], timings: Mapping[str, tuple[str, float]], root: Path,
                 registry: str | None) -> str:
    """What a pipeline run ends with: each step's status and time, the test metrics beside popularity's, where
    the model is, and the next two commands to try."""
    total = sum(seconds for _, seconds in timings.values())
    lines = ["", f"== Pipeline summary (MLflow run {summary['mlflow_run_id']}, {total:.0f} s) =="]
    lines += [f"  {step:<14} {status:<10} {seconds:7.1f} s" for step, (status, seconds) in timings.items()]
    if "model" in summary:
        lines.append(f"Test: recall@10 {summary.get('recall_at_10', float('nan')):.4f}, NDCG@10 "
                     f"{summary.get('ndcg_at_10', float('nan')):.4f}, RMSE {summary.get('rmse', float('nan')):.3f}"
                     f" | popularity: recall@10 {summary.get('popularity_recall_at_10', float('nan')):.4f}, NDCG@10 "
                     f"{summary.get('popularity_ndcg_at_10', float('nan')):.4f}")
        lines.append(f"Model: {summary['model']} in {summary['model_path']}" + champion_note(registry, summary["model"], root))
        where = "" if root == Path("artifacts").absolute() else f" --store {root}"
        lines += ["Next:", f'  animerec recommend --likes "Cowboy Bebop" "Toradora!"{where}',
                  f"  animerec web{where}    # then open http://127.0.0.1:8080"]
    return "\n".join(lines)


def champion_note(registry: str | None, model_ref: str, root: Path) -> str:
    """``; models:/<registry>@champion`` when the registry's champion alias is this model, else nothing."""
    from animerec.registry import CHAMPION, version_of

    try:
        version = version_of(registry, model_ref, str(root)) if registry else None
        champion = MlflowClient().get_model_version_by_alias(registry, CHAMPION) if version else None
    except Exception:  # noqa: BLE001 - no registry (a file store), or no alias yet: nothing to say
        return ""
    return f"; models:/{registry}@{CHAMPION}" if champion and champion.version == version.version else ""


class Summary(dict):
    """What one pipeline run returns: a dict for the sweep's summary table (:mod:`animerec.sweep`), and,
    as a float, its ``objective`` (``model.best_metric``, a valid metric) for Hydra's Optuna sweeper:
    NaN when the run trained no model or failed on a user error, which Optuna records as a failed trial."""

    def __init__(self, values: Mapping[str, Any] = (), objective: str | None = None) -> None:
        super().__init__(values)
        self.objective = objective

    def __float__(self) -> float:
        value = self.get(self.objective) if self.objective else None
        return float(value) if isinstance(value, (int, float)) else float("nan")


def run_step(project_root: Path, step: str, overrides: Sequence[str], experiment_id: str) -> dict[str, str]:
    """One step as an MLflow project run; returns the artifact versions it produced (``name -> ref``)."""

    submitted = mlflow.projects.run(
        str(project_root / "components" / step),
        entry_point="main",
        parameters={"overrides": json.dumps(list(overrides))},
        env_manager="local",
        run_name=step,
        experiment_id=experiment_id,
        synchronous=False,
    )
    submitted.wait()
    run = MlflowClient().get_run(submitted.run_id)
    if submitted.get_status() != "FINISHED":
        message = run.data.tags.get(ERROR_TAG)
        if message:
            raise StepFailed(step, message)
        raise RuntimeError(f"Step {step} failed ({submitted.get_status()}); its traceback is printed above.")
    return {tag[len("output."):]: value for tag, value in run.data.tags.items() if tag.startswith("output.")}


class StepFailed(UserError):
    """A step stopped on a user error; the message is the step's own."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


def model_summary(version) -> dict:
    """A stored model's reference, its valid metrics (to choose by) and test metrics (to report), flat."""

    metrics = json.loads(version.file("metrics.json").read_text(encoding="utf-8"))
    row = {"model": version.ref, "model_path": str(version.path)}
    row.update({k: metrics[k] for k in ("valid_ndcg_at_10", "valid_recall_at_10", "valid_rmse", "rmse", "mae",
                                               "recall_at_10", "ndcg_at_10", "train_seconds") if k in metrics})
    popularity = metrics.get("baselines", {}).get("popularity", {})
    row.update({f"popularity_{k}": v for k, v in popularity.items() if k in ("recall_at_10", "ndcg_at_10")})
    return row


def step_main(step: str, config_dir: Path, argv: Sequence[str] | None = None) -> int:
    """What each ``components/<step>/run.py`` runs: parse arguments, compose config, run the step.

    A user error prints ``error: <step>: ...`` and returns 2 (no traceback, nothing stored); under
    ``mlflow run`` the message is also recorded on the step's run, for the pipeline to report.
    """
    parser = argparse.ArgumentParser(
        prog=f"components/{step}/run.py",
        description=f"Run the '{step}' step of the anime recommender pipeline on its own: it reads "
        f"{', '.join(STEPS[step].inputs) or 'no artifact'} (the latest versions, or those pinned with inputs.*) "
        f"and stores {', '.join(STEPS[step].outputs)}. Every option of config.yaml can be overridden, as with main.py.",
        epilog=f"Example: python components/{step}/run.py --overrides \"data.min_user_ratings=5 wandb.mode=disabled\"",
    )
    parser.add_argument(
        "--overrides", default="",
        help="Hydra overrides for config.yaml, separated by spaces; quote values with spaces as Hydra does: "
             "recs.anime=\"Cowboy Bebop\" recs.genres=[Action,\"Slice of Life\"]",
    )
    parser.add_argument("--print-config", action="store_true", help="print the composed configuration and exit")
    args = parser.parse_args(argv)
    setup_logging()
    run_id = os.environ.get("MLFLOW_RUN_ID")  # read now: mlflow.end_run() removes it from the environment
    try:
        cfg = compose_config(split_overrides(args.overrides), config_dir)
        if args.print_config:
            print(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
            return 0
        with native_stderr_quiet():  # the step's imports: TensorFlow's CUDA probing
            function = STEPS[step].function
        function(cfg)
    except UserError as err:
        print(f"\nerror: {step}: {err}", file=sys.stderr)
        record_error(run_id, str(err))
        return 2
    return 0


def record_error(run_id: str | None, message: str) -> None:
    """Tag the MLflow run that ``mlflow run`` made for this step with the user error's message."""
    if not run_id:
        return
    try:
        MlflowClient().set_tag(run_id, ERROR_TAG, message[:4900])
    except Exception as err:  # the message is already on stderr
        logger.warning("Could not record the error on MLflow run %s: %s", run_id, err)

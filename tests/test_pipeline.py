"""The pipeline shell: step selection, component entry points, and `mlflow run .` end to end."""

import os
import subprocess
import sys

import pytest

from animerec.errors import ConfigError
from animerec.pipeline import STEPS, compose_config, parse_steps, step_main
from tests.conftest import PROJECT_ROOT, TINY_DEMO


def test_parse_steps_orders_and_validates():
    available = ["download", "preprocess"]
    assert parse_steps("all", available) == available
    assert parse_steps("preprocess,download", available) == ["download", "preprocess"]
    assert parse_steps(["preprocess"], available) == ["preprocess"]
    with pytest.raises(ConfigError, match="unknown step.*trian.*the steps are download"):
        parse_steps("download,trian", available)
    with pytest.raises(ConfigError, match="not available in this version yet"):
        parse_steps([s for s in STEPS if s not in available][:1] or ["nonexistent"], available)


def test_bad_override_is_a_config_error():
    with pytest.raises(ConfigError, match="Bad configuration override"):
        compose_config(["data.no_such_key=1"], PROJECT_ROOT)


def test_component_prints_clear_error_and_exit_code(tmp_path, capsys):
    code = step_main("preprocess", PROJECT_ROOT, ["--overrides", f"main.artifact_root={tmp_path} wandb.mode=disabled"])
    assert code == 2
    assert "No artifact named 'raw_anime'" in capsys.readouterr().err


def test_mlflow_run_end_to_end(tmp_path):
    """`mlflow run . --env-manager local` on tiny demo data, as a user would type it."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "WANDB_MODE": "offline"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    steps = os.environ.get("ANIMEREC_E2E_STEPS", "all")
    # `mlflow run` runs main.py inside the project folder: point the store and W&B at tmp_path.
    options = " ".join(TINY_DEMO + [f"main.artifact_root={tmp_path / 'artifacts'}", f"wandb.dir={tmp_path}",
                                    "model.epochs=2", "model.embedding_size=16", "recs.random=true"])
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local",
         "-P", f"steps={steps}", "-P", f"hydra_options={options}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    from animerec.artifacts import ArtifactStore

    store = ArtifactStore(tmp_path / "artifacts")
    assert {"raw_anime", "raw_ratings", "preprocessed"} <= set(store.names())
    assert list((tmp_path / "wandb").glob("offline-run-*"))

    import mlflow

    client = mlflow.tracking.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(client.search_experiments()[-1].experiment_id)
    parents = [r for r in runs if r.info.run_name == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert {r.info.run_name for r in children} >= {"download", "preprocess"}
    assert all(r.info.status == "FINISHED" for r in children)

"""StepRun over the Tracker interface: every backend gets every call, in order, failures included."""

from __future__ import annotations

import pandas as pd
import pytest

from animerec.artifacts import ArtifactStore
from animerec.config import WandbConfig
from animerec.pretrained import resolve_wandb_mode
from animerec.tracking.backends import MlflowTracker, Tracker, WandbTracker
from animerec.tracking.steprun import StepRun, default_trackers


class Recorder(Tracker):
    """A backend that writes down what it was asked to do."""

    def __init__(self, name: str, calls: list, fail_on_start: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail_on_start = fail_on_start
        self.run_name = None

    def start(self, step, config, run_name):
        if self.fail_on_start:
            raise RuntimeError(f"{self.name} is down")
        self.run_id = f"{self.name}-0123456789"
        self.run_name = run_name
        self.calls.append((self.name, "start", step, dict(config)))

    def finish(self, failed):
        self.calls.append((self.name, "finish", failed))

    def links(self):
        return {f"{self.name}.run_id": self.run_id}

    def link(self, tags):
        self.calls.append((self.name, "link", dict(tags)))

    def record_input(self, version):
        self.calls.append((self.name, "input", version.ref))

    def record_output(self, version, description):
        self.calls.append((self.name, "output", version.ref, description))

    def log_metrics(self, metrics, step=None):
        self.calls.append((self.name, "metrics", dict(metrics), step))

    def log_summary(self, summary):
        self.calls.append((self.name, "summary", dict(summary)))

    def log_image(self, key, path):
        self.calls.append((self.name, "image", key))

    def log_table(self, key, frame):
        self.calls.append((self.name, "table", key, len(frame)))


def of(calls, name):
    return [c[1:] for c in calls if c[0] == name]


def test_every_backend_gets_every_call(tmp_path):
    calls: list = []
    first, second = Recorder("a", calls), Recorder("b", calls)
    store = ArtifactStore(tmp_path / "store")
    with store.new_version("raw", "raw_data") as pending:
        (pending.path / "x.txt").write_text("x")
    with StepRun("train", {"model": {"l2": 0.1}}, store, trackers=[first, second]) as run:
        assert run.use("raw:latest").ref == "raw:v1"
        with run.output("model", "model", description="weights") as pending:
            (pending.path / "w.txt").write_text("w")
        run.log_metrics({"loss": 0.5, "missing": None}, step=2)
        run.log_summary({"test": {"rmse": 1.25}, "note": "text"})
        run.log_image("loss_curve", tmp_path / "loss.png")
        run.log_table("split_sizes", pd.DataFrame({"n": [1, 2]}))
    assert second.run_name == "train-a-012345"  # named after the first backend's run
    for name, other in (("a", "b"), ("b", "a")):
        assert of(calls, name) == [
            ("start", "train", {"model": {"l2": 0.1}}),
            ("link", {f"{other}.run_id": f"{other}-0123456789"}),
            ("input", "raw:v1"),
            ("output", "model:v1", "weights"),
            ("metrics", {"loss": 0.5}, 2),
            ("summary", {"test.rmse": 1.25, "note": "text"}),
            ("image", "loss_curve"),
            ("table", "split_sizes", 2),
            ("finish", False),
        ]
    assert [c[0] for c in calls if c[1] == "finish"] == ["b", "a"]  # last opened, first closed
    producer = store.resolve("model:v1").manifest["producer"]
    assert producer["a_run_id"] == "a-0123456789" and producer["b_run_id"] == "b-0123456789"
    assert producer["inputs"] == {"raw": "raw:v1"}


def test_a_failing_step_finishes_every_backend_as_failed(tmp_path):
    calls: list = []
    trackers = [Recorder("a", calls), Recorder("b", calls)]
    with pytest.raises(ValueError, match="boom"):
        with StepRun("train", {}, ArtifactStore(tmp_path / "store"), trackers=trackers):
            raise ValueError("boom")
    assert [c for c in calls if c[1] == "finish"] == [("b", "finish", True), ("a", "finish", True)]


def test_a_backend_that_cannot_start_closes_the_ones_already_open(tmp_path):
    calls: list = []
    trackers = [Recorder("a", calls), Recorder("b", calls, fail_on_start=True)]
    with pytest.raises(RuntimeError, match="b is down"):
        with StepRun("train", {}, ArtifactStore(tmp_path / "store"), trackers=trackers):
            pytest.fail("the body must not run")
    assert [c for c in calls if c[1] == "finish"] == [("a", "finish", True)]


def wandb_settings(mode: str | None = None, dir: str | None = None) -> WandbConfig:
    return WandbConfig(project="anime-recommender", entity=None, mode=mode, group=None, dir=dir)


@pytest.mark.parametrize("mode, kinds", [
    ("disabled", [MlflowTracker]),
    ("offline", [MlflowTracker, WandbTracker]),
])
def test_default_trackers_follow_wandb_mode(tmp_path, mode, kinds):
    trackers = default_trackers(ArtifactStore(tmp_path), wandb_settings(mode=mode), mlflow_copy_max_mb=5)
    assert [type(t) for t in trackers] == kinds
    assert trackers[0].copy_max_mb == 5


def test_wandb_mode_is_checked(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_wandb_mode(None) == "offline"  # never requires an account
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # W&B's older name for offline
    assert resolve_wandb_mode(None) == "offline" and resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(None) == "online"
    with pytest.raises(ValueError, match="online or offline"):
        WandbTracker(wandb_settings(), "disabled", None)


def test_real_backends_link_their_runs(tmp_path):
    """MLflow + offline W&B: the MLflow run carries the W&B run ID and the output, W&B gets the artifact."""
    import mlflow

    from tests.wandb_log import logged_artifacts

    store = ArtifactStore(tmp_path / "store")
    settings = wandb_settings(mode="offline", dir=str(tmp_path))
    with StepRun("preprocess", {"data": {"seed": 1}}, store, settings) as run:
        with run.output("preprocessed", "preprocessed_data") as pending:
            (pending.path / "train.csv").write_text("a\n1\n")
        run.log_metrics({"rows": 1})
        mlflow_id, wandb_id = run.trackers[0].run_id, run.wandb.run_id
    tags = mlflow.get_run(mlflow_id).data.tags
    assert tags["wandb.run_id"] == wandb_id and tags["wandb.mode"] == "offline"
    assert tags["output.preprocessed"] == "preprocessed:v1"
    assert mlflow.get_run(mlflow_id).data.params["data.seed"] == "1"
    assert logged_artifacts(tmp_path) == {"preprocessed": "preprocessed_data"}


class FakeOnlineRun:
    """What WandbTracker uses of an online ``wandb.Run``, recorded."""

    def __init__(self):
        self.id, self.config_updates, self.used, self.linked = "abc123", [], [], []

    class _Config:
        def __init__(self, run):
            self.run = run

        def update(self, values, allow_val_change=False):
            self.run.config_updates.append(dict(values))

    @property
    def config(self):
        return self._Config(self)

    def use_artifact(self, name):
        self.used.append(name)

    def log_artifact(self, artifact):
        class Logged:
            name = artifact.name
            qualified_name = f"me/anime-recommender/{artifact.name}:v7"

            def wait(self):
                return self

        return Logged()

    def link_artifact(self, artifact, target_path, aliases):
        self.linked.append((artifact.qualified_name, target_path, tuple(aliases)))


def wandb_with_fake_run(tmp_path, mode: str, name: str):
    """A WandbTracker over a fake run, and one stored version called ``name``."""
    store = ArtifactStore(tmp_path / "store")
    tracker = WandbTracker(wandb_settings(mode=mode), mode, store)
    tracker.run = FakeOnlineRun()
    with store.new_version(name, f"{name}_data") as pending:
        (pending.path / "data.csv").write_text("a\n1\n")
    return tracker, store, pending.version


def test_online_wandb_declares_exact_inputs_and_records_output_versions(tmp_path):
    tracker, store, version = wandb_with_fake_run(tmp_path, "online", "preprocessed")
    tracker.record_output(version, "splits")
    assert store.resolve("preprocessed:v1").manifest["wandb_artifact"] == "me/anime-recommender/preprocessed:v7"
    tracker.record_input(store.resolve("preprocessed:v1"))
    assert tracker.run.used == ["me/anime-recommender/preprocessed:v7"]  # that version, never ":latest"
    assert {"input_preprocessed": "preprocessed:v1"} in tracker.run.config_updates
    assert tracker.link_to_registry("preprocessed", "anime-recommender", ["latest", "best"])
    assert tracker.run.linked == [("me/anime-recommender/preprocessed:v7", "wandb-registry-model/anime-recommender",
                                   ("latest", "best"))]
    assert not tracker.link_to_registry("model", "anime-recommender", ["latest"])  # not logged by this run


def test_offline_wandb_records_inputs_by_local_reference_only(tmp_path):
    tracker, _store, version = wandb_with_fake_run(tmp_path, "offline", "raw")
    tracker.record_input(version)
    assert tracker.run.used == []  # offline W&B cannot use_artifact
    assert tracker.run.config_updates == [{"input_raw": "raw:v1"}]
    assert not tracker.link_to_registry("raw", "anime-recommender", ["latest"])


def test_mlflow_gets_each_output_up_to_main_mlflow_copy_max_mb(tmp_path):
    """An output's files over ``main.mlflow_copy_max_mb`` stay in the store only: the MLflow run gets the rest, its
    manifest (their sizes and sha256s) and a tag with the version's folder."""
    from mlflow.tracking import MlflowClient

    store = ArtifactStore(tmp_path / "store")
    with StepRun("preprocess", {"seed": 1}, store, mlflow_copy_max_mb=0.001) as run:  # about 1 kB
        with run.output("preprocessed", "preprocessed_data") as out:
            (out.path / "small.txt").write_text("small")
            (out.path / "big.bin").write_bytes(b"0" * 4096)
    client = MlflowClient()
    run_id = run.trackers[0].run_id
    copied = {item.path for item in client.list_artifacts(run_id, "preprocessed")}
    assert copied == {"preprocessed/small.txt", "preprocessed/manifest.json"}
    assert "big.bin" in out.version.manifest["files"]
    tags = client.get_run(run_id).data.tags
    assert tags["output.preprocessed"] == out.version.ref and tags["output.preprocessed.path"] == str(out.version.path)

"""Pretrained models: every kind of reference, W&B fetching and caching, aliases, skipping steps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from animerec.artifacts import ArtifactStore, read_arrays
from animerec.bundle import BundleError
from animerec.pretrained import PretrainedError, is_wandb_ref, qualified_wandb_name, resolve_model, update_best_alias
from animerec.service import RecommendationService
from tests.conftest import PROJECT_ROOT

QUERIES = [
    {"kind": "similar_anime", "query": "Naruto", "n": 5, "types": ["TV"]},
    {"kind": "similar_users", "query": None, "n": 5},
    {"kind": "rating_recs", "query": None, "n": 5, "genres": ["Action"]},
]


@pytest.fixture
def store(trained, tmp_path):
    """A private copy of the trained store, so these tests can add versions and aliases."""
    cfg, _, _ = trained
    shutil.copytree(cfg.main.artifact_root, tmp_path / "store")
    return ArtifactStore(tmp_path / "store")


def answers(path) -> list[dict]:
    service = RecommendationService.from_path(path)
    user = int(service.bundle.user_ids[3])
    return [service.answer({**q, "query": q["query"] if q["query"] is not None else user}) for q in QUERIES]


class FakeArtifact:
    """What fetch_wandb uses of a W&B artifact: its name, digest and download()."""

    def __init__(self, folder, name):
        self.folder, self.qualified_name, self.digest, self.downloads = folder, name, "d1g3st", 0

    def download(self, root):
        self.downloads += 1
        shutil.copytree(self.folder, root, dirs_exist_ok=True)
        return root


class FakeApi:
    def __init__(self, artifact):
        self.artifact_obj, self.asked = artifact, []

    def artifact(self, name, type=None):
        self.asked.append((name, type))
        return self.artifact_obj


def test_every_kind_of_reference_gives_identical_recommendations(store, tmp_path, monkeypatch):
    original = store.resolve("model:latest")
    expected = answers(original.path)
    assert expected[0]["anime"] and all(a["type"] == "TV" for a in expected[0]["anime"])

    # a folder without a store manifest (e.g. downloaded by hand) is checked and imported once
    loose = tmp_path / "loose_model"
    shutil.copytree(original.path, loose)
    (loose / "manifest.json").unlink()
    imported = resolve_model(str(loose), store, wandb_mode="disabled")
    assert resolve_model(str(loose), store, wandb_mode="disabled").ref == imported.ref

    # a W&B reference, through the public API (a stand-in here; the real one is tested when online)
    import wandb

    fake = FakeArtifact(original.path, "me/anime-recommender/model:v7")
    api = FakeApi(fake)
    monkeypatch.setattr(wandb, "Api", lambda: api)
    from_wandb = resolve_model("me/anime-recommender/model:v7", store, wandb_mode="online")
    again = resolve_model("wandb:model:v7", store, wandb_mode="online", project="anime-recommender", entity="me")
    assert fake.downloads == 1 and again.ref == from_wandb.ref  # cached by digest
    assert api.asked == [("me/anime-recommender/model:v7", "model")] * 2
    assert from_wandb.metadata["wandb_source"] == "me/anime-recommender/model:v7"
    assert (from_wandb.path / "origin_manifest.json").is_file()
    from_wandb.verify()

    refs = {
        "model:latest": store.resolve("model:latest").path,
        "model:v1": resolve_model("model:v1", store, wandb_mode="disabled").path,
        "folder": resolve_model(str(original.path), store, wandb_mode="disabled").path,
        "loose folder": imported.path,
        "wandb": from_wandb.path,
    }
    for name, path in refs.items():
        assert answers(path) == expected, name


def test_wandb_reference_offline_says_what_to_do(store):
    with pytest.raises(PretrainedError, match=r"W&B is offline.*wandb login.*model:latest"):
        resolve_model("someone/anime-recommender/model:v3", store, wandb_mode="offline")
    with pytest.raises(PretrainedError, match=r"No model 'model:v99'.*versions: v1.*W&B is disabled"):
        resolve_model("model:v99", store, wandb_mode="disabled")
    with pytest.raises(PretrainedError, match="no such folder"):
        resolve_model("./nowhere/model", store, wandb_mode="disabled")


def test_reference_parsing():
    assert is_wandb_ref("me/proj/model:v3") and is_wandb_ref("wandb-registry-model/anime:best")
    assert is_wandb_ref("wandb:model:latest")
    assert not is_wandb_ref("model:latest") and not is_wandb_ref("artifacts/model/v3") and not is_wandb_ref("./a/b:c")
    assert qualified_wandb_name("wandb:model", "proj", None) == "proj/model:latest"
    assert qualified_wandb_name("wandb:model:best", "proj", "team") == "team/proj/model:best"
    assert qualified_wandb_name("me/proj/model:v3", None, None) == "me/proj/model:v3"
    with pytest.raises(PretrainedError, match=r"'wandb:model' has no project: set wandb.project or write "
                                              r"project/model:latest"):
        qualified_wandb_name("wandb:model", None, None)


def test_mismatched_model_artifact_is_refused(store, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(store.resolve("model:latest").path, broken)
    (broken / "manifest.json").unlink()
    encoders = read_arrays(broken / "encoders.npz")
    np.savez(broken / "encoders.npz", user_ids=encoders["user_ids"][::-1].copy(), anime_ids=encoders["anime_ids"])
    before = store.versions("model")
    with pytest.raises(BundleError, match="encoders.npz is not the one the model was trained with"):
        resolve_model(str(broken), store, wandb_mode="disabled")
    assert store.versions("model") == before  # nothing imported


def add_model(store, **metrics_update):
    first = store.resolve("model:v1")
    with store.new_version("model", "model") as pending:
        shutil.copytree(first.path, pending.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("manifest.json"))
        metrics = json.loads((pending.path / "metrics.json").read_text())
        (pending.path / "metrics.json").write_text(json.dumps({**metrics, **metrics_update}))
    return pending.version


def test_best_alias_follows_the_valid_metric(store):
    for valid_ndcg, valid_rmse in ((0.9, 3.0), (0.1, 1.0)):
        add_model(store, valid_ndcg_at_10=valid_ndcg, valid_rmse=valid_rmse, ndcg_at_10=1.0 - valid_ndcg)
    assert update_best_alias(store, "valid_ndcg_at_10").version == 2  # the test metric says v3: never read
    assert store.resolve("model:best").version == 2
    assert update_best_alias(store, "valid_rmse").version == 3  # lower is better for errors
    assert update_best_alias(store, "no_such_metric") is None


def test_best_alias_compares_only_models_of_the_same_data_and_evaluation(store):
    base = json.loads(store.resolve("model:v1").file("metrics.json").read_text())
    assert base["data_fingerprint"] and base["evaluation"]["k"] == 10  # the train step records both
    other_data = add_model(store, valid_ndcg_at_10=0.99, data_fingerprint="another dataset")
    other_eval = add_model(store, valid_ndcg_at_10=0.98, evaluation={**base["evaluation"], "relevance_threshold": 1.0})
    plain = add_model(store, valid_ndcg_at_10=0.2)
    # only v1 (the trained model) and plain (0.2) share data and evaluation: the better valid NDCG of the two
    expected = 1 if base["valid_ndcg_at_10"] > 0.2 else plain.version
    assert update_best_alias(store, "valid_ndcg_at_10", like=plain).version == expected
    assert update_best_alias(store, "valid_ndcg_at_10", like=other_data).version == other_data.version
    assert update_best_alias(store, "valid_ndcg_at_10", like=other_eval).version == other_eval.version


def test_train_step_set_best_alias(trained):
    cfg, _, result = trained
    store = ArtifactStore(cfg.main.artifact_root)
    assert store.resolve("model:best").ref == result["model"]


@pytest.mark.slow
def test_main_with_pretrained_skips_training_and_recommends(store, tmp_path):
    """`python main.py main.steps=[similar_anime] model.pretrained=<folder> recs.anime=Naruto`."""
    from animerec.pipeline import skip_for_pretrained
    from tests.conftest import make_config

    model_dir = store.resolve("model:latest").path
    cfg = make_config(tmp_path, f"model.pretrained={model_dir}")
    steps, pinned = skip_for_pretrained(cfg, ["download", "preprocess", "train", "similar_anime"])
    assert steps == ["similar_anime"] and pinned == str(model_dir)  # pinned by path: it may live in another store
    fresh = tmp_path / "fresh_store"  # a store with no data and no model of its own
    env = {**os.environ, "WANDB_MODE": "disabled"}
    out = subprocess.run(
        [sys.executable, "main.py", "main.steps=[preprocess,train,similar_anime]", f"model.pretrained={model_dir}",
         "recs.anime=Naruto", "recs.n=5", f"main.artifact_root={fresh}", f"wandb.dir={tmp_path}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "skipping preprocess, train" in out.stderr
    fresh_store = ArtifactStore(fresh)
    assert fresh_store.names() == ["similar_anime"]
    stored = fresh_store.resolve("similar_anime:latest")
    from animerec.config import ItemFilter

    expected = RecommendationService.from_path(model_dir).similar_anime("Naruto", 5, ItemFilter())[1]  # recs' defaults
    got = __import__("pandas").read_csv(stored.file("similar_anime.csv"))
    assert got["anime_id"].tolist() == expected["anime_id"].tolist()

    bad = subprocess.run(
        [sys.executable, "main.py", "main.steps=[similar_anime]", "model.pretrained=me/proj/model:v1",
         f"main.artifact_root={fresh}", f"wandb.dir={tmp_path}", "wandb.mode=offline"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2 and "wandb login" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(not os.environ.get("WANDB_API_KEY"), reason="needs a W&B account: set WANDB_API_KEY")
def test_wandb_online_roundtrip(store, tmp_path):
    """Log a model artifact to W&B for real, pull it back by reference, and compare recommendations."""
    import wandb

    original = store.resolve("model:latest")
    project = os.environ.get("ANIMEREC_TEST_WANDB_PROJECT", "animerec-tests")
    with wandb.init(project=project, job_type="test", dir=str(tmp_path)) as run:
        artifact = wandb.Artifact("model", type="model")
        artifact.add_dir(str(original.path))
        logged = run.log_artifact(artifact)
        logged.wait()
        name = logged.qualified_name
    fresh = ArtifactStore(tmp_path / "fresh")
    pulled = resolve_model(name, fresh, wandb_mode="online")
    assert answers(pulled.path) == answers(original.path)
    assert resolve_model(name, fresh, wandb_mode="online").ref == pulled.ref  # cached

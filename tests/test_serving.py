"""The MLflow pyfunc recommender, in process and behind `mlflow models serve`, and the `animerec` CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from animerec.artifacts import ArtifactStore
from animerec.service import RecommendationService


@pytest.fixture(scope="module")
def served(trained):
    cfg, _, result = trained
    store = ArtifactStore(cfg.main.artifact_root)
    service = RecommendationService.from_path(store.resolve(result["model"]).path)
    user = int(service.bundle.user_ids[5])
    requests = [
        {"kind": "similar_anime", "query": "Naruto", "n": 5, "types": ["TV"]},
        {"kind": "similar_anime", "query": int(service.bundle.anime_ids[0]), "n": 3},
        {"kind": "similar_users", "query": user, "n": 4},
        {"kind": "rating_recs", "query": user, "n": 6, "genres": ["Comedy"], "min_rating": 1},
        {"kind": "rating_recs", "n": 5, "ratings": [{"anime_id": int(a), "rating": r} for a, r in
                                                    zip(service.bundle.anime_ids[:6], (10, 9, 2, 8, 0, 7))]},
        {"kind": "similar_users", "n": 3, "likes": ["Naruto", "Cowboy Bebop"]},
    ]
    # served by a registry alias: the trained model registered under a name of this test's own (other tests
    # train and register too, and move anime-recommender@champion in this session's tracking store)
    from animerec.registry import CHAMPION, register_and_promote

    register_and_promote(result["model_uri"], "served-by-alias", result["model"], result["model"],
                         str(store.root))
    return f"models:/served-by-alias@{CHAMPION}", service, requests


def test_pyfunc_answers_like_the_library(served):
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    uri, service, requests = served
    model = mlflow.pyfunc.load_model(uri)
    for request in requests:
        assert model.predict(pd.DataFrame([request])) == [service.answer(request)]
    pairs = pd.DataFrame({"user_id": service.bundle.user_ids[:3], "anime_id": service.bundle.anime_ids[:3]})
    ratings = model.predict(pairs)["predicted_rating"].to_numpy()
    assert ((ratings >= 1) & (ratings <= 10)).all()
    with pytest.raises(MlflowException, match="Request row 0: No anime titled"):
        model.predict(pd.DataFrame([{"kind": "similar_anime", "query": "Qqqzzz Nothing"}]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_each_recommender(served, tmp_path):
    uri, service, requests = served
    port = _free_port()
    mlflow_cli = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    server = subprocess.Popen(
        [mlflow_cli, "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "mlflow models serve did not come up in 180 s"
            time.sleep(1)
        for request in requests:
            status, body = _post(f"{base}/invocations", {"dataframe_records": [request]})
            assert status == 200, body
            assert body["predictions"] == [json.loads(json.dumps(service.answer(request)))]
        status, body = _post(f"{base}/invocations", {"dataframe_records": [
            {"user_id": int(service.bundle.user_ids[0]), "anime_id": int(service.bundle.anime_ids[0])}]})
        assert status == 200 and 1 <= body["predictions"][0]["predicted_rating"] <= 10
        for bad, message in (({"kind": "similar_anime", "query": "Qqqzzz Nothing"}, "No anime titled"),
                             ({"kind": "top_charts", "query": 1}, "kind must be one of"),
                             ({"kind": "rating_recs", "query": -1}, "Unknown user_id -1"),
                             ({"kind": "similar_users", "query": 1, "colour": "red"}, "Unknown field")):
            status, body = _post(f"{base}/invocations", {"dataframe_records": [bad]})
            assert status == 400 and message in body["message"], body
            assert "stack_trace" not in body and "Traceback" not in body["message"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_cli_matches_the_library(served, trained, capsys, tmp_path):
    from animerec.cli import main

    _, service, requests = served
    cfg, _, _ = trained
    store = cfg.main.artifact_root
    user = requests[2]["query"]
    cases = [
        (["similar-anime", "Naruto", "-n", "5", "--types", "TV"], requests[0]),
        (["similar-users", str(user), "-n", "4"], requests[2]),
        (["recommend", str(user), "-n", "6", "--genres", "Comedy", "--min-rating", "1"], requests[3]),
    ]
    for argv, request in cases:
        assert main([*argv, "--store", store, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(service.answer(request)))
    # anyone's list: a CSV, a MAL export and liked titles give the library's rows
    listed = requests[4]["ratings"]
    csv_path, xml_path = tmp_path / "mine.csv", tmp_path / "animelist.xml.gz"
    csv_path.write_text("anime_id,rating\n" + "".join(f"{r['anime_id']},{r['rating']}\n" for r in listed))
    entries = "".join(f"<anime><series_animedb_id>{r['anime_id']}</series_animedb_id><my_score>{r['rating']}</my_score>"
                      f"<my_status>Completed</my_status></anime>" for r in listed)
    xml_path.write_bytes(gzip.compress(f"<myanimelist><myinfo/>{entries}</myanimelist>".encode()))
    expected = json.loads(json.dumps(service.answer(requests[4])))["anime"]
    for path in (csv_path, xml_path):
        assert main(["recommend", "--ratings", str(path), "-n", "5", "--store", store, "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["anime"] == expected and answer["query"]["list"]["source"] == str(path)
        assert not {row["anime_id"] for row in answer["anime"]} & {r["anime_id"] for r in listed}
    assert main(["similar-users", "--likes", "Naruto", "Cowboy Bebop", "-n", "3", "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(service.answer(requests[5])))
    assert main(["recommend", "--ratings", str(csv_path), "--store", store]) == 0
    assert "6 anime listed, 5 rated ones used" in capsys.readouterr().out
    assert main(["recommend", "5", "--likes", "Naruto", "--store", store]) == 2
    assert ("needs one of: a user ID, --ratings FILE, --likes TITLE..., --mal-user NAME or --anilist-user NAME "
            "(got a user ID and --likes)") in capsys.readouterr().err
    (tmp_path / "bad.xml").write_text("<myanimelist><anime><series_animedb_id>1")
    assert main(["recommend", "--ratings", str(tmp_path / "bad.xml"), "--store", store]) == 2
    assert "bad.xml is not well-formed XML" in capsys.readouterr().err
    assert main(["similar-anime", "Naruto", "-n", "5", "--types", "TV", "--store", store]) == 0
    table = capsys.readouterr().out
    assert "Anime similar to Naruto" in table and service.answer(requests[0])["anime"][0]["title"] in table
    assert main(["similar-anime", "Qqqzzz Nothing", "--store", store]) == 2
    assert "No anime titled" in capsys.readouterr().err
    assert main(["recommend", "1", "--model", "me/proj/model:v1", "--store", store]) == 2
    assert "wandb login" in capsys.readouterr().err


def test_cli_is_installed_with_help_for_each_command():
    exe = shutil.which("animerec", path=os.path.dirname(sys.executable))
    assert exe, "the animerec console script is not installed (pip install -e .)"
    for command in ([], ["similar-anime"], ["similar-users"], ["recommend"]):
        out = subprocess.run([exe, *command, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "usage: animerec" in out.stdout, out.stderr


def test_registry_champion_follows_the_valid_best_model(trained, tmp_path):
    """Two more models registered: the champion alias moves to the better one on valid, not to the newest."""
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from animerec.pretrained import update_best_alias
    from animerec.pyfunc import log_pyfunc
    from animerec.registry import CHAMPION, MODEL_TAG, register_and_promote, version_of
    from tests.test_pretrained import add_model

    cfg, _, result = trained
    client = MlflowClient()
    own_store = str(ArtifactStore(cfg.main.artifact_root).root)
    registered = version_of("anime-recommender", result["model"], own_store)
    assert result["registered_uri"] == f"models:/anime-recommender/{registered.version}"  # the train step's

    shutil.copytree(cfg.main.artifact_root, tmp_path / "store")
    store = ArtifactStore(tmp_path / "store")
    name = "registry-test"
    first = store.resolve("model:v1")
    base = json.loads(first.file("metrics.json").read_text())["valid_ndcg_at_10"]

    def train_like(version):
        with mlflow.start_run():
            uri = log_pyfunc(version.path)
        best = update_best_alias(store, "valid_ndcg_at_10", like=version)
        return register_and_promote(uri, name, version.ref, best.ref, str(store.root))

    train_like(first)
    champion_uri = f"models:/{name}@{CHAMPION}"
    better = add_model(store, valid_ndcg_at_10=base + 0.1, ndcg_at_10=0.0)  # the test metric must not matter
    train_like(better)
    assert client.get_model_version_by_alias(name, CHAMPION).tags[MODEL_TAG] == better.ref
    worse = add_model(store, valid_ndcg_at_10=base - 0.1, ndcg_at_10=1.0)
    train_like(worse)
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert champion.tags[MODEL_TAG] == better.ref and int(champion.version) == 2
    request = {"kind": "similar_anime", "query": "Naruto", "n": 3}
    served = mlflow.pyfunc.load_model(champion_uri).predict(pd.DataFrame([request]))
    assert served == [RecommendationService.from_path(better.path).answer(request)]


def test_a_model_over_the_copy_limit_is_logged_by_reference(trained, tmp_path):
    """Over main.mlflow_copy_max_mb the pyfunc holds the folder's path and manifest hash, not a copy; loading checks them."""
    import mlflow
    import pandas as pd

    from animerec.artifacts import ArtifactError
    from animerec.pyfunc import REFERENCE_FILE, log_pyfunc

    cfg, _, result = trained
    shutil.copytree(cfg.main.artifact_root, tmp_path / "store")
    version = ArtifactStore(tmp_path / "store").resolve(result["model"])
    with mlflow.start_run():
        uri = log_pyfunc(version.path, copy_max_mb=0)
        copied = log_pyfunc(version.path, copy_max_mb=1e6)
    held = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "held"))
    files = sorted(p.name for p in (tmp_path / "held").rglob("*") if p.is_file() and "bundle" in p.parts)
    assert files == [REFERENCE_FILE], files  # no model file was copied
    assert json.loads(next((tmp_path / "held").rglob(REFERENCE_FILE)).read_text())["path"] == str(version.path)
    assert held
    request = pd.DataFrame([{"kind": "similar_anime", "query": "Naruto", "n": 3}])
    assert mlflow.pyfunc.load_model(uri).predict(request) == mlflow.pyfunc.load_model(copied).predict(request)
    shutil.move(version.path, tmp_path / "moved")
    with pytest.raises(ArtifactError, match="refers to the model artifact at .* and that folder is gone"):
        mlflow.pyfunc.load_model(uri)
    assert mlflow.pyfunc.load_model(copied).predict(request)  # the copy does not depend on the store

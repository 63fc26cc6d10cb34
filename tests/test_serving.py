"""The MLflow pyfunc recommender, in process and behind `mlflow models serve`, and the `animerec` CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from animerec.artifacts import ArtifactStore
from animerec.service import RecommendationService
from tests.conftest import free_port


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
    # the signature names both shapes' fields; a table may mix them; the service's limits hold
    assert {"kind", "query", "n", "genres", "mal_user", "user_id", "anime_id"} <= set(
        model.metadata.get_input_schema().input_names())
    pair = {"user_id": int(service.bundle.user_ids[0]), "anime_id": int(service.bundle.anime_ids[0])}
    mixed = model.predict(pd.DataFrame([requests[0], pair]))
    assert mixed[0] == service.answer(requests[0])
    assert mixed[1]["predicted_rating"] == pytest.approx(float(service.bundle.predict([pair["user_id"]],
                                                                                      [pair["anime_id"]])[0]))
    with pytest.raises(MlflowException, match="n=10001: Input should be less than or equal to 10000"):
        model.predict(pd.DataFrame([{**requests[0], "n": 10_001}]))
    with pytest.raises(MlflowException, match="at most 100 queries"):
        model.predict(pd.DataFrame([requests[0]] * 101))
    # a rating pair in a mixed table takes user_id and anime_id only; IDs are whole numbers
    with pytest.raises(MlflowException, match=r"A row without 'kind' is a rating pair of user_id and anime_id only, "
                                              r"not anime_id, n, user_id"):
        model.predict(pd.DataFrame([requests[0], {**pair, "n": 3}]))
    with pytest.raises(MlflowException, match=r"anime_id must be a MAL ID \(a whole number\), got 'twenty'"):
        model.predict(pd.DataFrame({"user_id": [pair["user_id"]], "anime_id": ["twenty"]}))


def test_serving_imports_only_the_pinned_packages(served, trained):
    """What animerec's modules import while the pyfunc answers every request shape is what the logged model pins
    (:data:`animerec.pyfunc.SERVING_PACKAGES`), and none of it is TensorFlow or Keras."""
    from importlib.metadata import distribution

    from animerec.pyfunc import PAIR_FIELDS, SERVING_PACKAGES

    _, service, requests = served
    cfg, _, result = trained
    path = ArtifactStore(cfg.main.artifact_root).resolve(result["model"]).path
    pair = dict(zip(PAIR_FIELDS, (int(service.bundle.user_ids[0]), int(service.bundle.anime_ids[0]))))
    script = os.path.join(os.path.dirname(__file__), "serving_imports.py")
    done = subprocess.run([sys.executable, script, str(path), json.dumps([*requests, pair])],
                          capture_output=True, text=True, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    pinned = {distribution(name).metadata["Name"].lower() for name in SERVING_PACKAGES}
    mlflow_parts = {"mlflow-skinny", "mlflow-tracing"}  # the module mlflow is in all three distributions
    assert {name.lower() for name in found["distributions"]} - mlflow_parts <= pinned, found
    assert not found["tensorflow"]


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _serve(model: str, port: int, log, env_manager: str, env: dict, cwd) -> subprocess.Popen:
    mlflow_cli = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    return subprocess.Popen(
        [mlflow_cli, "models", "serve", "-m", model, "--env-manager", env_manager, "-h", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=cwd)


def _wait_for(base: str, server: subprocess.Popen, log_path, seconds: int) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        assert server.poll() is None, log_path.read_text()[-3000:]
        assert time.time() < deadline, f"mlflow models serve did not come up in {seconds} s"
        time.sleep(2)


@pytest.mark.slow
def test_a_copied_model_serves_from_its_own_environment(served, tmp_path):
    """The registered model, copied by its alias to a folder away from this repository, served with
    ``--env-manager virtualenv``: an environment that has only MLflow and the model's own requirements."""
    import mlflow.artifacts
    import yaml

    uri, service, requests = served
    if shutil.which("pyenv") is None:
        pytest.skip("mlflow's virtualenv environments need pyenv")
    folder = tmp_path / "away" / "model"
    mlflow.artifacts.download_artifacts(uri, dst_path=str(folder))
    described = yaml.safe_load((folder / "MLmodel").read_text())
    named = {column["name"] for column in json.loads(described["signature"]["inputs"])}
    assert {"kind", "query", "n", "genres", "ratings", "user_id", "anime_id"} <= named
    assert (folder / described["saved_input_example_info"]["artifact_path"]).is_file()
    needs = (folder / "requirements.txt").read_text().split()
    assert all("==" in line for line in needs if not line.startswith("-")), needs
    assert not any(line.startswith(("animerec", "tensorflow", "keras")) for line in needs), needs

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env["PATH"]])
    env["MLFLOW_ENV_ROOT"] = str(tmp_path / "envs")  # built here, from nothing
    port, log_path = free_port(), tmp_path / "server.log"
    server = _serve(str(folder), port, open(log_path, "w"), "virtualenv", env, tmp_path / "away")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(base, server, log_path, 900)
        installed = {p.name.split("-")[0].lower() for p in (tmp_path / "envs").rglob("site-packages/*")}
        assert installed & {"mlflow", "numpy"} and not installed & {"animerec", "tensorflow", "keras"}
        _check_answers(base, service, requests)
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _check_answers(base: str, service, requests) -> None:
    for request in requests:
        status, body = _post(f"{base}/invocations", {"dataframe_records": [request]})
        assert status == 200, body
        assert body["predictions"] == [json.loads(json.dumps(service.answer(request)))]
    pair = {"user_id": int(service.bundle.user_ids[0]), "anime_id": int(service.bundle.anime_ids[0])}
    status, body = _post(f"{base}/invocations", {"dataframe_records": [pair]})
    assert status == 200 and 1 <= body["predictions"][0]["predicted_rating"] <= 10
    expected = float(service.bundle.predict([pair["user_id"]], [pair["anime_id"]])[0])
    assert body["predictions"][0]["predicted_rating"] == pytest.approx(expected, rel=1e-5)
    status, body = _post(f"{base}/invocations", {"dataframe_records": [requests[0], pair]})  # both shapes at once
    assert status == 200 and body["predictions"][1]["predicted_rating"] == pytest.approx(expected, rel=1e-5)
    too_long = [{"anime_id": int(a), "rating": 8} for a in range(1, 100_002)]
    for bad, message in (({"kind": "similar_anime", "query": "Qqqzzz Nothing"}, "No anime titled"),
                         ({"kind": "top_charts", "query": 1}, "kind='top_charts': Input should be 'similar_anime'"),
                         ({"kind": "rating_recs", "query": -1}, "Unknown user_id -1"),
                         ({"kind": "similar_anime", "query": "Naruto", "min_score": 11}, "min_score"),
                         ({"kind": "similar_anime", "query": "Naruto", "n": 50000}, "n=50000: Input should be less than or equal to 10000"),
                         ({"kind": "rating_recs", "ratings": too_long}, "more than 100,000 anime")):
        status, body = _post(f"{base}/invocations", {"dataframe_records": [bad]})
        assert status == 400 and message in body["message"], body
        assert "stack_trace" not in body and "Traceback" not in body["message"]
    # A field the signature does not name is dropped by MLflow (with a warning in the server's log), not refused
    status, body = _post(f"{base}/invocations", {"dataframe_records": [{**requests[2], "colour": "red"}]})
    assert status == 200 and body["predictions"] == [json.loads(json.dumps(service.answer(requests[2])))]


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
    assert "6 anime listed, 5 rated ones used" in " ".join(capsys.readouterr().out.split())  # notes wrap to the terminal
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
    # both have the signature; only the copy has an input example (MLflow checks one by loading the model)
    held_info, copied_info = mlflow.models.get_model_info(uri), mlflow.models.get_model_info(copied)
    assert held_info.signature is not None and copied_info.signature is not None
    assert held_info.saved_input_example_info is None and copied_info.saved_input_example_info is not None
    request = pd.DataFrame([{"kind": "similar_anime", "query": "Naruto", "n": 3}])
    assert mlflow.pyfunc.load_model(uri).predict(request) == mlflow.pyfunc.load_model(copied).predict(request)
    shutil.move(version.path, tmp_path / "moved")
    with pytest.raises(ArtifactError, match="refers to the model artifact at .* and that folder is gone"):
        mlflow.pyfunc.load_model(uri)
    assert mlflow.pyfunc.load_model(copied).predict(request)  # the copy does not depend on the store


def test_cli_tables_fit_the_terminal_and_a_closed_pipe_ends_quietly(served, trained, tmp_path):
    """At COLUMNS=100 no line of an answer is wider than 100 (--wide shows every column); piped into a reader that
    stops early (`| head -2`), the command ends without a traceback."""
    cfg, _, _ = trained
    _, service, requests = served
    exe = shutil.which("animerec", path=os.path.dirname(sys.executable))
    env = {**os.environ, "COLUMNS": "100"}
    for argv in (["similar-anime", "Naruto"], ["recommend", str(requests[2]["query"])],
                 ["similar-users", str(requests[2]["query"])], ["recommend", "--likes", "Naruto", "Cowboy Bebop"]):
        out = subprocess.run([exe, *argv, "--store", cfg.main.artifact_root], capture_output=True, text=True,
                             env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        assert max(map(len, out.stdout.splitlines())) <= 100, out.stdout
    wide = subprocess.run([exe, "similar-anime", "Naruto", "--wide", "--store", cfg.main.artifact_root],
                          capture_output=True, text=True, env=env, timeout=300)
    assert "https://myanimelist.net/anime/" in wide.stdout and "members" in wide.stdout
    piped = subprocess.run(f"'{exe}' similar-anime Naruto -n 50 --store '{cfg.main.artifact_root}' | head -2",
                           shell=True, capture_output=True, text=True, env=env, timeout=300)
    assert len(piped.stdout.splitlines()) == 2 and "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr

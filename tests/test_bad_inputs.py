"""A table of bad inputs, each through a real entry point: exit code, message, and nothing written.

Entry points: ``main.py`` (a subprocess, as a user runs it), a component's ``run.py`` (``step_main``,
what ``mlflow run components/<step>`` calls), the ``animerec`` CLI, and the pyfunc server's
``predict``. Every case must fail with status 2 (HTTP 400 for the server), a message that starts
with ``error:`` and says what is wrong, no traceback, and no new file in the artifact store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from animerec.pipeline import step_main
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def snapshot(root: Path) -> list[str]:
    """Every file and folder under the store (aliases, versions, staging folders)."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")) if Path(root).exists() else []


def run_main(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "main.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_clean_failure(code: int, out: str, err: str, pattern: str) -> None:
    import re

    assert code == 2, f"exit {code}\n{out[-2000:]}\n{err[-3000:]}"
    assert "Traceback" not in out + err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines, err[-3000:]
    assert re.search(pattern, " ".join(lines)), f"{pattern!r} not in {lines}"


# --- config values, through main.py ------------------------------------------------------------------
CONFIG_CASES = {
    "int as text": (["data.min_user_ratings=abc"], r"data.min_user_ratings='abc': Input should be a valid integer"),
    "n as text": (["recs.n=abc"], r"recs.n='abc': Input should be a valid integer"),
    "n zero": (["recs.n=0"], r"recs.n=0: Input should be greater than or equal to 1"),
    "negative l2": (["model.l2=-1"], r"model.l2=-1: Input should be greater than or equal to 0"),
    "unknown source": (["data.source=ftp"], r"data.source='ftp': Input should be 'demo', 'url', 'kaggle' or 'local'"),
    "unknown type": (["recs.types=[TV,Film]"], r"recs.types.1='Film': Input should be 'TV', 'Movie', 'OVA', 'ONA', 'Special' or 'Music'"),
    "fractions": (["data.test_fraction=0.6", "data.valid_fraction=0.5"], r"leaves nothing to train on"),
    "unknown key": (["data.no_such_key=1"], r"bad configuration override.*no_such_key.*Allowed keys of data: "
                                            r"source, demo,"),
    "unknown preset": (["model=fastest"], r"bad configuration override.*fastest"),
    "unknown step": (["main.steps=[download,trian]"], r"main.steps=.*: unknown step\(s\) trian"),
    "local without paths": (["data.source=local"], r"data.source=local needs data.anime_path and data.ratings_path"),
    "bool as text": (["data.drop_unwatched=maybe"], r"data.drop_unwatched='maybe': Input should be a valid boolean"),
    "ordered pair": (["recs.min_score=9", "recs.max_score=5"], r"recs.min_score=9 is above recs.max_score=5"),
    "broken syntax": (["recs.anime=Steins;Gate"], r"bad configuration override"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_through_main(case, tmp_path):
    overrides, pattern = CONFIG_CASES[case]
    store = tmp_path / "artifacts"
    result = run_main([*overrides, f"main.artifact_root={store}"], tmp_path)
    assert_clean_failure(result.returncode, result.stdout, result.stderr, pattern)
    assert snapshot(store) == []


# --- data files, through the preprocess component ----------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ANIME_CSV = "MAL_ID,Name,Score,Genres,Type,Episodes,Members\n1,Cowboy Bebop,8.78,Action,TV,26,1251960\n5,Tengoku,8.39,Action,Movie,1,273145\n"
DATA_CASES = {
    "missing file": (None, r"does not exist"),
    "empty file": ("", r"the file is empty"),
    "header only": ("user_id,anime_id,rating\n", r"has a header but no rows"),
    "wrong columns": ("user,item,score\n1,1,8\n", r"lacks required column\(s\) user_id.*Columns found: user, item, score"),
    "non-numeric rating": ("user_id,anime_id,rating\n1,1,great\n", r"column rating holds a value that is not a number"),
    "rating out of range": ("user_id,anime_id,rating\n1,1,11\n1,5,8\n", r"outside the MAL scale 1-10"),
    "unknown anime ID": ("user_id,anime_id,rating\n1,999,8\n1,1,7\n", r"name anime IDs that are not in the anime file.*999"),
    "wrong layout": (ANIME_CSV, r"ratings file lacks required column"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_ratings_file_through_preprocess(case, tmp_path, capsys):
    text, pattern = DATA_CASES[case]
    anime = _write(tmp_path / "anime.csv", ANIME_CSV)
    ratings = tmp_path / "ratings.csv" if text is None else _write(tmp_path / "ratings.csv", text)
    store = tmp_path / "artifacts"
    common = f"main.artifact_root={store} wandb.mode=disabled data.min_user_ratings=1"
    if text is None:  # the download step itself refuses a missing file
        code = step_main("download", PROJECT_ROOT, ["--overrides", f"{common} data.source=local "
                                                    f"data.anime_path={anime} data.ratings_path={ratings}"])
        captured = capsys.readouterr()
        assert_clean_failure(code, captured.out, captured.err, pattern)
        assert snapshot(store) in ([], ["raw_anime", "raw_ratings"])  # no version, no staging folder left
        return
    assert step_main("download", PROJECT_ROOT, ["--overrides", f"{common} data.source=local "
                                                f"data.anime_path={anime} data.ratings_path={ratings}"]) == 0
    before = snapshot(store)
    capsys.readouterr()
    code = step_main("preprocess", PROJECT_ROOT, ["--overrides", common])
    captured = capsys.readouterr()
    assert_clean_failure(code, captured.out, captured.err, r"^error: preprocess: .*" + pattern)
    assert snapshot(store) == before


def test_bad_anime_file_through_preprocess(tmp_path, capsys):
    anime = _write(tmp_path / "anime.csv", "MAL_ID,Name\n1,Cowboy Bebop\n")
    ratings = _write(tmp_path / "ratings.csv", "user_id,anime_id,rating\n1,1,8\n")
    store = tmp_path / "artifacts"
    common = f"main.artifact_root={store} wandb.mode=disabled data.min_user_ratings=1"
    assert step_main("download", PROJECT_ROOT, ["--overrides", f"{common} data.source=local "
                                                f"data.anime_path={anime} data.ratings_path={ratings}"]) == 0
    before = snapshot(store)
    code = step_main("preprocess", PROJECT_ROOT, ["--overrides", common])
    captured = capsys.readouterr()
    assert_clean_failure(code, captured.out, captured.err, r"anime file lacks required column\(s\) genres")
    assert snapshot(store) == before


# --- recommender queries and model references, through the recommender components ------------------
QUERY_CASES = {
    "unknown title": ("similar_anime", 'recs.anime="Cowboy Bebopp zzz"', r"No anime titled 'Cowboy Bebopp zzz' in the catalogue stands out"),
    "unknown anime ID": ("similar_anime", "recs.anime_id=99999999", r"Anime 99999999 has no embedding"),
    "unknown user": ("rating_recs", "recs.user_id=-5 recs.rating_user=given", r"Unknown user_id -5"),
    "unknown genre": ("similar_anime", 'recs.anime="Cowboy Bebop" recs.genres=[Fantasyy]', r"Unknown genre 'Fantasyy'"),
    "empty after filters": ("similar_anime", 'recs.anime="Cowboy Bebop" recs.min_score=9.9', r"No anime is left after the filters"),
    "missing model version": ("similar_anime", "model.pretrained=model:v99", r"no version v99"),
    "no such model folder": ("similar_users", "model.pretrained=/no/such/folder", r"no such folder"),
    "W&B model offline": ("rating_recs", "model.pretrained=team/proj/model:v1 wandb.mode=offline",
                          r"names a W&B artifact, but W&B is offline"),
    "not a model folder": ("similar_anime", "model.pretrained={tmp}", r"is a folder but not a model artifact"),
}


@pytest.mark.parametrize("case", list(QUERY_CASES))
def test_bad_query_through_recommender_component(case, trained, tmp_path, capsys):
    cfg, _, _ = trained
    store = Path(cfg.main.artifact_root)
    step, overrides, pattern = QUERY_CASES[case]
    before = snapshot(store)
    code = step_main(step, PROJECT_ROOT, ["--overrides", f"main.artifact_root={store} wandb.mode=disabled "
                                          + overrides.format(tmp=tmp_path)])
    captured = capsys.readouterr()
    assert_clean_failure(code, captured.out, captured.err, rf"^error: {step}: .*{pattern}")
    assert snapshot(store) == before


@pytest.mark.slow
def test_failed_step_message_reaches_the_top_through_main(trained, tmp_path):
    """A step that fails inside `mlflow run` reports its own message at the top, without a traceback."""
    cfg, _, _ = trained
    store = tmp_path / "store"
    shutil.copytree(cfg.main.artifact_root, store)
    before = snapshot(store)
    result = run_main(["main.steps=[similar_anime]", 'recs.anime="Cowboy Bebopp zzz"', f"main.artifact_root={store}"],
                      tmp_path)
    assert_clean_failure(result.returncode, result.stdout, result.stderr,
                         r"^error: similar_anime: No anime titled 'Cowboy Bebopp zzz' in the catalogue stands out")
    assert snapshot(store) == before


# --- the animerec CLI ---------------------------------------------------------------------------------
CLI_CASES = {
    "n zero": (["similar-anime", "Cowboy Bebop", "-n", "0"], r"n=0: Input should be greater than 0"),
    "user not an int": (["recommend", "abc"], r"argument user_id: invalid int value: 'abc'"),
    "missing argument": (["similar-anime"], r"similar-anime needs a title or --id MAL_ID"),
    "unknown command": (["frobnicate"], r"invalid choice: 'frobnicate'"),
    "unknown type": (["similar-anime", "Cowboy Bebop", "--types", "Film"], r"types.0='Film': Input should be 'TV', 'Movie'"),
    "unknown user": (["similar-users", "-7"], r"Unknown user_id -7"),
    "bad model reference": (["recommend", "1", "--model", "model:v42"], r"no version v42"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_cli_arguments(case, trained, capsys):
    from animerec.cli import main as cli

    cfg, _, _ = trained
    store = Path(cfg.main.artifact_root)
    argv, pattern = CLI_CASES[case]
    before = snapshot(store)
    try:
        code = cli([*argv, "--store", str(store)] if argv[0] != "frobnicate" else argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    captured = capsys.readouterr()
    assert_clean_failure(code, captured.out, captured.err, pattern)
    assert snapshot(store) == before


# --- serving requests ----------------------------------------------------------------------------------
SERVING_CASES = {
    "unknown kind": ([{"kind": "nope", "query": 1}], r"Request row 0: kind='nope': Input should be 'similar_anime'"),
    "missing query": ([{"kind": "similar_anime"}], r"needs 'query': an anime title or MAL ID"),
    "n as text": ([{"kind": "similar_anime", "query": "Cowboy Bebop", "n": "ten"}], r"n='ten': Input should be a valid integer"),
    "unknown field": ([{"kind": "rating_recs", "query": 1, "colour": "red"}], r"Unknown field\(s\) colour"),
    "unknown user pair": ([{"user_id": -1, "anime_id": 1}], r"Unknown user_id -1"),
    "no columns": ([{"foo": 1}], r"Request lacks column\(s\) user_id, anime_id"),
}


@pytest.mark.parametrize("case", list(SERVING_CASES))
def test_bad_serving_requests_are_http_400(case, trained):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from animerec.pyfunc import AnimeRecPyfunc
    from animerec.service import RecommendationService

    cfg, _, _ = trained
    store = Path(cfg.main.artifact_root)
    from animerec.artifacts import ArtifactStore

    model = AnimeRecPyfunc()
    model.service = RecommendationService.from_path(ArtifactStore(store).resolve("model:latest").path)
    rows, pattern = SERVING_CASES[case]
    with pytest.raises(MlflowException, match=pattern) as raised:
        model.predict(None, pd.DataFrame(rows))
    assert raised.value.get_http_status_code() == 400


@pytest.mark.slow
def test_a_bad_sweep_job_is_reported_and_the_sweep_goes_on(tmp_path):
    import pandas as pd

    store = tmp_path / "artifacts"
    result = run_main(["-m", "main.steps=[download]", "data.demo.num_users=abc,20", "data.demo.min_ratings_per_user=5",
                       "data.demo.max_ratings_per_user=10", f"main.artifact_root={store}",
                       f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert "error: 1 of 2 sweep jobs failed" in result.stderr
    summary = pd.read_csv(tmp_path / "sweep" / "summary.csv")
    assert list(summary["status"]) == ["error", "completed"]
    assert "data.demo.num_users='abc': Input should be a valid integer" in summary["error"].iloc[0]
    assert snapshot(store / "raw_ratings") == ["v1", "v1/animelist.csv", "v1/manifest.json"]  # the good job ran

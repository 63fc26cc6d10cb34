"""The real pipeline at Kaggle 2020 size: wall time and peak memory of every stage.

1. Generates synthetic ratings at the size of the Kaggle "Anime Recommendation Database 2020"
   (325,000 users, the real 17,562-anime catalogue, 57,600,000 ratings) in its
   ``rating_complete.csv`` layout: power-law user activity (a lognormal, clipped to 1 and
   3,000 ratings), anime drawn by their real MAL member counts, and ratings skewed like MAL's
   (most 6-9): a per-user offset, the anime's real MAL score, a hidden taste match and noise.
   Vectorised over users; a few minutes at full size.
2. Runs the real commands as separate processes, stage by stage: ``python main.py`` with
   ``data.source=local`` for download + preprocess, ``train`` with the seed model for one epoch,
   ``train`` with ``model=best`` for one epoch, ``train`` with ``model=best`` to early stopping (every
   epoch the preset allows, the taste index and the ranking head: the time to a trained model), and
   the three recommender steps; and the peer users would pick, implicit's ALS (64 factors, 15 iterations)
   on the same preprocessed ratings (``benchmarks/als_fit.py``, its own process, loading included). Asked
   for, ``best_floor`` trains ``model=best`` with nothing to choose (one value per grid) for one epoch:
   the least time its train step can take.
3. Prints ``stage=<name> seconds=<s> peak_rss_mb=<m>`` per stage (the peak of the stage's
   largest process, children included), the ratings count, ``seed_epoch_seconds``,
   ``best_epoch_seconds`` (the network's epoch), ``best_taste_fit_seconds`` (the similar-anime index's whole
   fit, its cross-validation included), ``best_ranker_fit_seconds`` (the EASE head's whole fit, its
   cross-validation included), ``best_train_to_stop_seconds`` with the epochs the network ran,
   ``als_seconds`` and ``best_to_stop_vs_als`` (the ratio of the two stages' wall times; the goal is at or
   below 1.0), with ``best_floor`` its ``best_floor_seconds`` and ``best_floor_vs_als``, ``max_peak_rss_mb``
   and ``disk_mb`` of the store, mlruns and wandb.

    python benchmarks/full_scale.py                                  # full size (long: see the README)
    python benchmarks/full_scale.py --users 20000 --ratings 3500000  # a smaller run for development
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
# Runs one command and reports the peak RSS of its largest descendant (they are all waited for).
MEASURE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
           "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); sys.exit(rc)")


def generate(path: Path, num_users: int, num_ratings: int, seed: int = 0) -> int:
    """Write ``user_id,anime_id,rating`` to ``path``; returns the number of ratings written."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from animerec.data import demo
    from animerec.data.layouts import load_anime

    anime = load_anime(demo.catalogue_path())
    ids = anime["anime_id"].to_numpy(np.int64)
    popularity = np.maximum(anime["members"].fillna(0).to_numpy(np.float64), 10.0) ** 0.9
    cumulative = np.cumsum(popularity / popularity.sum())
    quality = np.nan_to_num(anime["score"].to_numpy(np.float64), nan=6.5)
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(mean=0.0, sigma=1.2, size=num_users)
    # drawn with replacement, then one rating per (user, anime) kept: about 16% are repeats at full size
    counts = np.clip(np.round(activity / activity.sum() * num_ratings * 1.19), 1, 3_000).astype(np.int64)
    offsets = rng.normal(0.0, 0.8, num_users)
    taste_user = rng.normal(size=(num_users, 4)).astype(np.float32)
    taste_anime = rng.normal(size=(len(ids), 4)).astype(np.float32)
    written = 0
    schema = pa.schema([("user_id", pa.int32()), ("anime_id", pa.int32()), ("rating", pa.int8())])
    with pcsv.CSVWriter(str(path), schema) as writer:
        for start in range(0, num_users, 20_000):
            users = np.arange(start, min(start + 20_000, num_users))
            per_user = counts[users]
            owner = np.repeat(users, per_user)
            picks = np.searchsorted(cumulative, rng.random(len(owner)))
            picks = np.minimum(picks, len(ids) - 1)
            keys = np.unique(owner.astype(np.int64) * len(ids) + picks)  # one rating per (user, anime)
            owner, picks = keys // len(ids), keys % len(ids)
            match = np.einsum("ij,ij->i", taste_user[owner], taste_anime[picks])
            raw = quality[picks] + offsets[owner] + 0.6 * match + rng.normal(0.0, 1.0, len(owner)) + 0.1
            rating = np.clip(np.round(raw), 1, 10).astype(np.int8)
            writer.write_table(pa.table({"user_id": owner.astype(np.int32), "anime_id": ids[picks].astype(np.int32),
                                         "rating": rating}, schema=schema))
            written += len(owner)
    return written


def run_stage(name: str, command: list[str], env: dict, log: Path) -> dict:
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n===== {name}: {' '.join(command)}\n")
        out.flush()
        done = subprocess.run([sys.executable, "-c", MEASURE, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=out, text=True)
    seconds = time.perf_counter() - started
    peak = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    with open(log, "a") as out:
        out.write(done.stdout)
    row = {"stage": name, "seconds": seconds, "peak_rss_mb": (peak[0] / 1024) if peak else float("nan"),
           "rc": done.returncode, "printed": done.stdout}
    print(f"stage={name} seconds={seconds:.1f} peak_rss_mb={row['peak_rss_mb']:.0f}"
          + ("" if done.returncode == 0 else f" FAILED (exit {done.returncode}; see {log})"), flush=True)
    return row


def epoch_seconds(store: Path) -> tuple[float, float | None, dict | None]:
    """The newest model's first epoch (its own seconds in the history), its ranking head's whole fit, if any,
    and its taste index's report, if any."""
    newest = newest_model(store)
    history = pd.read_csv(newest / "history.csv")
    metrics = json.loads((newest / "metrics.json").read_text())
    return float(history["seconds"].iloc[0]), (metrics.get("ranker") or {}).get("fit_seconds"), metrics.get("taste")


def newest_model(store: Path) -> Path:
    return newest(store / "model")


def newest(folder: Path) -> Path:
    """An artifact's newest version folder (``v3`` after ``v2``)."""
    return max(folder.glob("v*"), key=lambda p: int(p.name[1:]))


def folder_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=325_000)
    parser.add_argument("--ratings", type=int, default=57_600_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/animerec-full-scale"))
    parser.add_argument("--stages", nargs="+", default=["data", "seed", "best", "best_to_stop", "als", "recs"],
                        choices=["data", "seed", "best", "best_to_stop", "best_floor", "als", "recs"],
                        help="best_floor (not run by default): model=best with nothing to choose, one epoch")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    # One run's figures: nothing left from an earlier run in the store, MLflow or W&B folders.
    for leftover in ("artifacts", "mlruns", "wandb", "mlflow.db", "full_scale.log"):
        path = work / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    ratings = work / "rating_complete.csv"
    started = time.perf_counter()
    count = generate(ratings, args.users, args.ratings)
    print(f"generated {count:,} ratings of {args.users:,} users in {time.perf_counter() - started:.0f} s "
          f"({ratings.stat().st_size / 2**20:.0f} MB)", flush=True)
    from animerec.data import demo

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "WANDB_MODE": "offline",
           "WANDB_DIR": str(work)}
    common = [f"main.artifact_root={work / 'artifacts'}", f"wandb.dir={work}", "evaluate.max_users=5000",
              "train.verbose=0"]
    stages = {
        "data": ["main.steps=[download,preprocess]", "data.source=local", f"data.anime_path={demo.catalogue_path()}",
                 f"data.ratings_path={ratings}"],
        "seed": ["main.steps=[train]", "model.epochs=1"],
        # one epoch of the network, the rest as the preset says
        "best": ["main.steps=[train]", "model=best", "model.epochs=1"],
        # the time to a trained model=best, the preset as it is: every epoch early stopping allows, then the taste
        # index and the ranking head
        "best_to_stop": ["main.steps=[train]", "model=best"],
        # model=best with nothing left to choose and one epoch: the least its train step can take (the network's one
        # pass, the ranking head's fits on train and on train + valid, the co-occurrence index, evaluation, artifact)
        "best_floor": ["main.steps=[train]", "model=best", "model.epochs=1", "model.ranker.l2=[102400]",
                       "model.ranker.like_weight=[0]", "model.ranker.rating_weight=[0]",
                       "model.taste.item_weights.cooc=[1]", "model.taste.item_weights.content=[0]"],
        "recs": ["main.steps=[similar_anime,similar_users,rating_recs]", 'recs.anime="Cowboy Bebop"'],
    }
    rows, log = [], work / "full_scale.log"
    create_experiment(env["MLFLOW_TRACKING_URI"], work / "mlruns")  # MLflow's run artifacts go to work/mlruns
    for name in args.stages:
        command = [sys.executable, "main.py", *stages[name], *common] if name != "als" else \
            [sys.executable, str(ROOT / "benchmarks" / "als_fit.py"), str(newest(work / "artifacts" / "preprocessed"))]
        row = run_stage(name, command, env, log)
        rows.append(row)
        if row["rc"] != 0:
            break
        if name in ("seed", "best", "best_to_stop", "best_floor"):
            row["epoch_seconds"], row["ranker_seconds"], row["taste"] = epoch_seconds(work / "artifacts")
            row["epochs"] = len(pd.read_csv(newest_model(work / "artifacts") / "history.csv"))
    print(f"ratings: {count}")
    for name in ("seed", "best"):
        found = [r for r in rows if r["stage"] == name and "epoch_seconds" in r]
        if name == "best" and not found:  # the same network, head and taste index, trained to early stopping
            found = [r for r in rows if r["stage"] == "best_to_stop" and "epoch_seconds" in r]
        print(f"{name}_epoch_seconds: {found[0]['epoch_seconds']:.1f}" if found else f"{name}_epoch_seconds: n/a")
        if found and found[0].get("ranker_seconds") is not None:  # the closed-form part: its whole fit
            print(f"{name}_ranker_fit_seconds: {found[0]['ranker_seconds']:.1f}")
        taste = found[0].get("taste") if found else None
        if taste:  # the similar-anime index: its whole fit
            print(f"{name}_taste_fit_seconds: {taste['fit_seconds']:.1f}")
    stop = [r for r in rows if r["stage"] == "best_to_stop" and "epochs" in r]
    if stop:
        print(f"best_train_to_stop_seconds: {stop[0]['seconds']:.1f} (network {stop[0]['epochs']} epochs, the ranking "
              f"head {stop[0]['ranker_seconds'] or 0:.0f} s; evaluation included)")
    als = [float(line.split()[1]) for r in rows if r["stage"] == "als" for line in r["printed"].splitlines()
           if line.startswith("als_seconds")]
    if als:
        print(f"als_seconds: {als[0]:.1f} (the whole stage {[r for r in rows if r['stage'] == 'als'][0]['seconds']:.1f} s)")
    als_stage = [r["seconds"] for r in rows if r["stage"] == "als"][0] if als else None
    if als and stop:  # the two stages' wall times, each a process of its own that loads the ratings
        print(f"best_to_stop_vs_als: {stop[0]['seconds'] / als_stage:.2f}")
    floor = [r for r in rows if r["stage"] == "best_floor" and r["rc"] == 0]
    if als and floor:
        print(f"best_floor_seconds: {floor[0]['seconds']:.1f}")
        print(f"best_floor_vs_als: {floor[0]['seconds'] / als_stage:.2f}")
    print(f"max_peak_rss_mb: {max(r['peak_rss_mb'] for r in rows):.0f}")
    disk = {"artifacts": folder_mb(work / "artifacts"), "mlruns": folder_mb(work / "mlruns"),
            "wandb": folder_mb(work / "wandb")}
    print("disk_mb: " + json.dumps({name: round(value, 1) for name, value in disk.items()}))


def create_experiment(tracking_uri: str, artifacts: Path) -> None:
    """The pipeline's MLflow experiment, with its run artifacts under ``artifacts``."""
    from mlflow.tracking import MlflowClient

    from animerec.pipeline import compose_config

    name = compose_config([], ROOT).main.experiment_name
    MlflowClient(tracking_uri).create_experiment(name, artifact_location=artifacts.resolve().as_uri())


if __name__ == "__main__":
    main()

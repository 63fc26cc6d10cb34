"""The download and preprocess steps."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from animerec.artifacts import copy_file
from animerec.config import Config, check_source
from animerec.data import demo
from animerec.data.download import fetch_data_file, kaggle_credentials, kaggle_file_url
from animerec.data.layouts import find_data_file, load_anime
from animerec.data.preprocess import preprocess as preprocess_files
from animerec.errors import ConfigError
from animerec.steps.common import pinned, step_run

logger = logging.getLogger(__name__)

def _copy_local(source: Path, folder: Path) -> Path:
    """Put a local file into an artifact folder as a copy (a reflink where the filesystem can).

    Never a hard link: editing the user's file afterwards must not change a stored version.
    """
    source = Path(source).expanduser()
    if not source.is_file():
        raise ConfigError(f"Local data file {source} does not exist (data.anime_path / data.ratings_path).")
    target = folder / source.name
    copy_file(source, target)
    return target


def _fill_raw(data: dict, anime_dir: Path, ratings_dir: Path, part_dir: Path) -> None:
    """Fill the two staging folders; partial downloads live in ``part_dir`` so a rerun resumes them."""
    source = data.source
    if source == "demo":
        shutil.copyfile(demo.catalogue_path(), anime_dir / "anime.csv.gz")
        ratings = demo.make_ratings(load_anime(anime_dir / "anime.csv.gz"), data.demo)
        ratings.to_csv(ratings_dir / "animelist.csv", index=False)
    elif source == "url":
        fetch_data_file(data.anime_url, anime_dir, sha256=data.anime_sha256, part_dir=part_dir)
        fetch_data_file(data.ratings_url, ratings_dir, sha256=data.ratings_sha256, part_dir=part_dir)
    elif source == "kaggle":
        auth = kaggle_credentials()
        dataset = data.kaggle_dataset
        for name, folder in ((data.kaggle_anime_file, anime_dir), (data.kaggle_ratings_file, ratings_dir)):
            fetch_data_file(kaggle_file_url(dataset, name), folder, auth=auth, want=name, part_dir=part_dir)
    else:  # local
        _copy_local(data.anime_path, anime_dir)
        _copy_local(data.ratings_path, ratings_dir)


def download(cfg: Config) -> dict:
    """Get the raw anime and ratings files and store them as ``raw_anime`` and ``raw_ratings``."""
    data = cfg.data
    check_source(data)
    with step_run("download", cfg) as run:
        meta = {"source": data.source}
        with run.output("raw_anime", "raw_data", description="MyAnimeList catalogue", metadata=meta) as anime, \
                run.output("raw_ratings", "raw_data", description="MyAnimeList user ratings", metadata=meta) as ratings:
            _fill_raw(data, anime.path, ratings.path, run.store.root / ".downloads")
        sizes = {
            "raw_anime_bytes": sum(i["size"] for i in anime.version.manifest["files"].values()),
            "raw_ratings_bytes": sum(i["size"] for i in ratings.version.manifest["files"].values()),
        }
        run.log_summary(sizes)
        logger.info("Raw data stored as %s and %s", anime.version.ref, ratings.version.ref)
        return {"raw_anime": anime.version.ref, "raw_ratings": ratings.version.ref}


def preprocess(cfg: Config) -> dict:
    """Clean, filter, scale, encode and split the latest raw data into ``preprocessed``."""
    data = cfg.data
    with step_run("preprocess", cfg) as run:
        raw_anime = run.use(pinned(cfg, "raw_anime"))
        raw_ratings = run.use(pinned(cfg, "raw_ratings"))
        anime_file = find_data_file(raw_anime.path, ("anime.csv", "anime.csv.gz", "anime-dataset-2023.csv"))
        ratings_file = find_data_file(
            raw_ratings.path, ("animelist.csv", "rating_complete.csv", "rating.csv", "users-score-2023.csv")
        )
        with run.output("preprocessed", "preprocessed_data", description="Cleaned, encoded and split ratings") as out:
            stats = preprocess_files(anime_file, ratings_file, data, out.path)
            out.metadata.update({k: stats[k] for k in ("num_users", "num_anime", "num_ratings", "splits")})
        run.log_summary({k: v for k, v in stats.items() if k not in ("options",)})
        run.log_image("rating_histogram", out.version.path / "rating_hist.png")

        run.log_table("split_sizes", pd.DataFrame({"split": list(stats["splits"]), "ratings": list(stats["splits"].values())}))
        return {"preprocessed": out.version.ref, "stats": stats}

"""Preprocessing on the real MAL files in every layout, its filters, and its errors."""

import json

import numpy as np
import pandas as pd
import pytest

from animerec.artifacts import ArtifactStore
from animerec.data import demo
from animerec.data.layouts import DataError, iter_ratings, load_anime
from animerec.data.preprocess import preprocess
from animerec.steps import STEPS
from tests.conftest import FIXTURES, composed

SAMPLE = FIXTURES / "rating_complete_sample.csv"


def data_config(**changes):
    """config.yaml's data section with ``changes`` (what the preprocess step passes)."""
    return composed().data.model_copy(update=changes)


def read_splits(folder):
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("train", "valid", "test")}


def test_real_sample_with_2020_catalogue(tmp_path):
    stats = preprocess(demo.catalogue_path(), SAMPLE, data_config(min_user_ratings=5), tmp_path)
    splits = read_splits(tmp_path)
    every = pd.concat(splits.values())
    raw = pd.read_csv(SAMPLE).drop_duplicates(["user_id", "anime_id"], keep="last")
    raw = raw[raw.groupby("user_id").anime_id.transform("size") >= 5]
    assert stats["num_ratings"] == len(every) == len(raw)
    assert list(splits["train"].columns) == ["user_id", "anime_id", "user_index", "anime_index", "rating", "rating_scaled"]
    # min-max scale stored with the data and applied
    scale = json.loads((tmp_path / "scale.json").read_text())
    assert scale == {"min": float(raw.rating.min()), "max": float(raw.rating.max())}
    np.testing.assert_allclose(every.rating_scaled, (every.rating - scale["min"]) / (scale["max"] - scale["min"]), rtol=1e-6)
    # encoders map indices back to the original IDs
    from animerec.artifacts import read_arrays

    enc = read_arrays(tmp_path / "encoders.npz")
    np.testing.assert_array_equal(enc["user_ids"][every.user_index], every.user_id)
    np.testing.assert_array_equal(enc["anime_ids"][every.anime_index], every.anime_id)
    assert every.user_index.max() + 1 == stats["num_users"] and every.anime_index.max() + 1 == stats["num_anime"]
    # per-user split: every user trains, no pair in two splits, ~10% test
    assert set(splits["test"].user_id) <= set(splits["train"].user_id)
    pairs = [set(zip(s.user_id, s.anime_id)) for s in splits.values()]
    assert not (pairs[0] & pairs[1] or pairs[0] & pairs[2] or pairs[1] & pairs[2])
    assert 0.08 < len(splits["test"]) / len(every) < 0.11
    anime = pd.read_parquet(tmp_path / "anime.parquet")
    rated = anime[anime.anime_index >= 0]
    assert len(rated) == stats["num_anime"]
    assert (tmp_path / "rating_hist.png").stat().st_size > 1000


def test_split_is_seeded(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in ((a, 1), (b, 1), (c, 2)):
        folder.mkdir()
        preprocess(demo.catalogue_path(), SAMPLE, data_config(min_user_ratings=5, split_seed=seed), folder)
    ta, tb, tc = (pd.read_parquet(f / "test.parquet") for f in (a, b, c))
    pd.testing.assert_frame_equal(ta, tb)
    assert not ta.equals(tc)


def test_2016_layout_html_entities_and_minus_one(tmp_path):
    anime = load_anime(FIXTURES / "anime_2016.csv")
    assert not anime.name.str.contains("&#039;").any()
    assert "Gintama&#039;" not in set(anime.name) and "Gintama'" in set(anime.name)
    assert anime.episodes.isna().any()  # "Unknown" episodes became missing
    ratings = tmp_path / "rating.csv"
    ids = anime.anime_id.head(30).tolist()
    rows = [(u, a, (-1 if (u + a) % 7 == 0 else (u * a) % 10 + 1)) for u in range(12) for a in ids]
    pd.DataFrame(rows, columns=["user_id", "anime_id", "rating"]).to_csv(ratings, index=False)
    out = tmp_path / "out"
    out.mkdir()
    stats = preprocess(FIXTURES / "anime_2016.csv", ratings, data_config(min_user_ratings=5), out)
    assert stats["rows"]["not_rated"] == sum(r[2] == -1 for r in rows)
    assert stats["num_ratings"] == sum(r[2] != -1 for r in rows)


def test_2023_layout_has_source_and_drops_unknown_ids(tmp_path):
    anime = load_anime(FIXTURES / "anime_2023_head.csv")
    assert anime.loc[anime.anime_id == 1, "source"].item() == "Original"
    assert anime.loc[anime.anime_id == 1, "english_name"].item() == "Cowboy Bebop"
    assert anime.loc[anime.anime_id == 1, "image_url"].item().startswith("https://")  # the page's cover
    assert not anime.isin(["UNKNOWN"]).any().any()
    with pytest.raises(DataError, match=r"anime IDs that are not in the anime file.*data.unknown_anime=drop"):
        preprocess(FIXTURES / "anime_2023_head.csv", SAMPLE, data_config(min_user_ratings=5), tmp_path)
    stats = preprocess(
        FIXTURES / "anime_2023_head.csv", SAMPLE, data_config(min_user_ratings=5, unknown_anime="drop"), tmp_path
    )
    assert stats["rows"]["unknown_anime"] > 0 and stats["num_ratings"] > 1000


def test_animelist_filters_and_duplicates(tmp_path):
    catalogue = load_anime(demo.catalogue_path())
    eps = dict(zip(catalogue.anime_id, catalogue.episodes))
    ids = [1, 5, 6, 7, 8, 15, 16, 17, 18, 19, 20, 21]  # 1 = Cowboy Bebop, 26 episodes
    rows = []
    for user in (10, 20):
        for a in ids:
            rows.append((user, a, 8, 2, int(eps[a]) if eps[a] == eps[a] else 1))
    rows += [
        (10, 22, 0, 1, 3),     # not rated
        (10, 23, 7, 6, 0),     # plan to watch
        (20, 22, 6, 4, 0),     # dropped before watching anything
        (20, 1, 9, 1, 5),      # duplicate of (20, 1): last one wins; watched 5 of 26
    ]
    path = tmp_path / "animelist.csv"
    pd.DataFrame(rows, columns=["user_id", "anime_id", "rating", "watching_status", "watched_episodes"]).to_csv(path, index=False)
    out = tmp_path / "out"
    out.mkdir()
    stats = preprocess(demo.catalogue_path(), path, data_config(min_user_ratings=5, test_fraction=0, valid_fraction=0), out)
    assert stats["rows"]["not_rated"] == 1 and stats["rows"]["plan_to_watch"] == 1 and stats["rows"]["unwatched"] == 1
    assert stats["rows"]["duplicates"] == 1
    train = pd.read_parquet(out / "train.parquet")
    assert train.loc[(train.user_id == 20) & (train.anime_id == 1), "rating"].item() == 9
    out2 = tmp_path / "out2"
    out2.mkdir()
    stats = preprocess(
        demo.catalogue_path(), path,
        data_config(min_user_ratings=5, test_fraction=0, valid_fraction=0, drop_half_watched=True), out2,
    )
    assert stats["rows"]["half_watched"] == 1  # 5 of 26 episodes


# --- bad inputs, through the steps: a clear error and no new artifact version ---------------

def run_local(config_factory, tmp_path, anime, ratings, *extra):
    cfg = config_factory("data.source=local", f"data.anime_path={anime}", f"data.ratings_path={ratings}",
                         "data.min_user_ratings=5", *extra)
    STEPS["download"](cfg)
    store = ArtifactStore(cfg.main.artifact_root)
    return cfg, store


@pytest.mark.parametrize(
    "ratings_text, message",
    [
        ("user_id,anime_id\n1,1\n", r"lacks required column\(s\) rating.*Columns found: user_id, anime_id"),
        ("user_id,anime_id,rating\n1,1,9\n1,5,great\n", r"column rating holds a value that is not a number"),
        ("user_id,anime_id,rating\n1,1,9\n1,99999999,8\n", r"anime IDs that are not in the anime file \(e.g. \[99999999\]\)"),
        ("", r"empty"),
        ("user_id,anime_id,rating\n", r"header but no rows"),
        ("user_id,anime_id,rating\n1,1,9\n1,5,8\n2,1,7\n", r"all 2 users were filtered out.*min_user_ratings=5"),
        ("user_id,anime_id,rating\n1,1,11\n", r"outside the MAL scale"),
    ],
    ids=["missing-column", "non-numeric", "unknown-anime", "empty-file", "header-only", "all-filtered", "out-of-scale"],
)
def test_bad_ratings_fail_clearly_and_write_nothing(config_factory, tmp_path, ratings_text, message):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text(ratings_text)
    cfg, store = run_local(config_factory, tmp_path, demo.catalogue_path(), ratings)
    with pytest.raises(DataError, match=message) as err:
        STEPS["preprocess"](cfg)
    assert str(ratings.name) in str(err.value)  # every message names the file
    assert store.versions("preprocessed") == []
    assert not [p for p in (store.root / "preprocessed").iterdir()] if (store.root / "preprocessed").exists() else True


def test_every_anime_filtered_out_names_the_option(config_factory, tmp_path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("user_id,anime_id,rating\n" + "".join(f"1,{a},8\n" for a in (1, 5, 6, 7, 8)))
    cfg, store = run_local(config_factory, tmp_path, demo.catalogue_path(), ratings, "data.min_anime_ratings=2")
    with pytest.raises(DataError, match=r"ratings.csv: all 5 anime were filtered out: none has at least "
                                         r"data.min_anime_ratings=2 ratings .*\(most ratings: 1\)"):
        STEPS["preprocess"](cfg)
    assert store.versions("preprocessed") == []


ANIME_HEADER = "MAL_ID,Name,Genres,Score,Type,Episodes,Members\n"


@pytest.mark.parametrize("name, text, message", [
    ("rows.csv", ANIME_HEADER, r"rows.csv: the anime file has a header but no rows"),
    ("ids.csv", ANIME_HEADER + "1,A,Action,8,TV,12,100\nx7,B,Drama,7,TV,1,5\n",
     r"ids.csv: column MAL_ID holds non-numeric anime IDs, e.g. \['x7'\]"),
])
def test_bad_anime_files_are_named(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        load_anime(tmp_path / name)


def test_an_anime_file_keeps_the_last_row_of_a_duplicate_id_in_csv_and_parquet(tmp_path, caplog):
    path = tmp_path / "anime.csv"
    path.write_text(ANIME_HEADER + "1,Old,Action,8,TV,12,100\n1,New,Drama,7,TV,1,5\n2,Other,Comedy,6,OVA,2,9\n")
    pd.read_csv(path).to_parquet(tmp_path / "anime.parquet")
    for source in (path, tmp_path / "anime.parquet"):
        with caplog.at_level("WARNING"):
            anime = load_anime(source)
        assert anime["name"].tolist() == ["New", "Other"] and anime["members"].tolist() == [5, 9]
        assert f"{source}: 1 duplicate anime IDs; keeping the last row of each" in caplog.text


def test_an_empty_id_in_a_ratings_file_is_named(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,anime_id,rating\n1,1,8\n2,,9\n")
    with pytest.raises(DataError, match=r"ratings.csv: column anime_id has 1 empty value\(s\); every row needs one"):
        next(iter_ratings(path))


def test_parquet_text_columns_are_read_as_numbers_or_named(tmp_path):
    """A Parquet file's text columns: numbers written as text are read; anything else names the column."""
    path = tmp_path / "ratings.parquet"
    pd.DataFrame({"user_id": ["1", "2"], "anime_id": ["20", "1"], "rating": ["9", "7.5"]}).to_parquet(path)
    batch = next(iter_ratings(path))
    assert batch.user_id.tolist() == [1, 2] and batch.anime_id.dtype == np.int64
    assert batch.rating.tolist() == [9.0, 7.5] and batch.rating.dtype == np.float32
    bad = {"anime_id": ("x1", "not integer IDs"), "rating": ("great", "not numbers")}
    for column, (value, what) in bad.items():
        frame = pd.DataFrame({"user_id": ["1", "2"], "anime_id": ["20", "1"], "rating": ["9", "8"]})
        frame.loc[1, column] = value
        frame.to_parquet(path)
        with pytest.raises(DataError, match=rf"ratings\.parquet: column {column} holds values that are {what}, "
                                            rf"e\.g\. \['{value}'\]"):
            next(iter_ratings(path))


def test_bad_anime_file_names_the_missing_column(config_factory, tmp_path):
    anime = tmp_path / "anime.csv"
    anime.write_text("MAL_ID,Name,Score\n1,Cowboy Bebop,8.78\n")
    cfg, store = run_local(config_factory, tmp_path, anime, SAMPLE)
    with pytest.raises(DataError, match=r"anime.csv: the anime file lacks required column\(s\) genres.*Columns found: MAL_ID, Name, Score"):
        STEPS["preprocess"](cfg)
    assert store.versions("preprocessed") == []


def test_steps_log_to_wandb_offline(config_factory, tmp_path):
    from tests.wandb_log import logged_artifacts

    cfg = config_factory("data.source=local", f"data.anime_path={demo.catalogue_path()}", f"data.ratings_path={SAMPLE}",
                         "data.min_user_ratings=5", wandb_mode="offline")
    STEPS["download"](cfg)
    result = STEPS["preprocess"](cfg)
    assert result["preprocessed"] == "preprocessed:v1"
    logged = logged_artifacts(tmp_path)
    assert {k: v for k, v in logged.items() if v != "run_table"} == {
        "raw_anime": "raw_data", "raw_ratings": "raw_data", "preprocessed": "preprocessed_data",
    }
    assert any(k.endswith("split_sizes") for k, v in logged.items() if v == "run_table")

"""The model artifact: writing it after training, and loading it without TensorFlow.

A model artifact folder is self-describing. It holds the Keras model (``model.keras``), the
two embedding matrices (``user_embeddings.npy`` ``[num_users, d]``, ``anime_embeddings.npy``
``[num_anime, d]``), the Dense unit and optional biases (``scorer.npz``), the encoders and rating
scale (so predictions map back to MAL IDs and 1-10), the anime table, every known rating
(``ratings.npz``, for "already rated" and favourites), the ranking head when the model has one
(``ranker.npz``: EASE weights, like-rate factor and the history it ranks from), the training history and its plot,
``metrics.json``, the config used, and ``model_info.json`` that ties them together (sizes,
activation, a fingerprint of the encoders, the project version). :meth:`ModelBundle.load` checks
that these agree, so a model cannot be silently paired with another dataset's encoders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from animerec.artifacts import project_version, read_arrays, read_part, write_arrays, write_part
from animerec.errors import UserError
from animerec.franchise import SequelLinks, co_watch_prerequisites
from animerec.ranking import HEADS
from animerec.scoring import Scorer
from animerec.taste.index import TasteIndex

# 2: the ranking head lost rating_power and the taste index its learned part and user blend (both parts
# carry their own format version from then on); an older release refuses this model instead of misreading it
FORMAT_VERSION = 2


class BundleError(UserError, ValueError):
    """A model artifact that is incomplete or inconsistent."""


def encoders_fingerprint(user_ids: np.ndarray, anime_ids: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(user_ids, dtype=np.int64).tobytes())
    digest.update(b"|")
    digest.update(np.ascontiguousarray(anime_ids, dtype=np.int64).tobytes())
    return digest.hexdigest()


def write_bundle(folder: Path, *, scorer_arrays: dict, user_emb: np.ndarray, anime_emb: np.ndarray,
                 activation: str, user_ids: np.ndarray, anime_ids: np.ndarray, scale: dict,
                 anime: pd.DataFrame, ratings: Mapping[str, Any], extra_info: dict | None = None, ranker=None,
                 taste=None) -> dict:
    """Write everything but the Keras model and the reports into ``folder``; returns model_info.

    ``ratings`` (a DataFrame or a dict of arrays) has ``user_index``, ``anime_index`` and ``rating``.
    """
    folder = Path(folder)
    np.save(folder / "user_embeddings.npy", np.asarray(user_emb, np.float32))
    np.save(folder / "anime_embeddings.npy", np.asarray(anime_emb, np.float32))
    write_arrays(folder / "scorer.npz", scorer_arrays)
    write_arrays(folder / "encoders.npz", {"user_ids": np.asarray(user_ids, np.int64),
                                           "anime_ids": np.asarray(anime_ids, np.int64)})
    (folder / "scale.json").write_text(json.dumps(scale) + "\n", encoding="utf-8")
    anime.to_parquet(folder / "anime.parquet", index=False)
    write_arrays(folder / "ratings.npz", {"user_index": np.asarray(ratings["user_index"], np.int32),
                                          "anime_index": np.asarray(ratings["anime_index"], np.int32),
                                          "rating": np.asarray(ratings["rating"], np.int8)})
    titles = anime.set_index("anime_id")["name"].reindex(np.asarray(anime_ids)).fillna("").astype(str).to_numpy()
    sequels = SequelLinks(co_watch_prerequisites(np.asarray(ratings["user_index"]), np.asarray(ratings["anime_index"]),
                                                 np.asarray(anime_ids, np.int64), titles))
    for name, part in (("ranker", ranker), ("taste", taste), ("sequels", sequels)):
        if part is not None:
            write_part(folder / f"{name}.npz", part.arrays(), name, part.FORMAT_VERSION)
    info = {
        "format_version": FORMAT_VERSION,
        "project_version": project_version(),
        "num_users": int(len(user_ids)),
        "num_anime": int(len(anime_ids)),
        "embedding_size": int(user_emb.shape[1]),
        "activation": activation,
        "use_bias": scorer_arrays.get("user_bias") is not None,
        "preference": scorer_arrays.get("preference_bias") is not None,
        "ranker": ranker.KIND if ranker is not None else None,
        "taste": "blend" if taste is not None else None,
        "encoders_sha256": encoders_fingerprint(user_ids, anime_ids),
        **(extra_info or {}),
    }
    (folder / "model_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _optional_part(path: Path, info: dict, name: str, what: str, shape: tuple[int, int]):
    """The ranking head (``ranker.npz``) or taste index (``taste.npz``) that model_info.json names, checked
    against the encoders' users x anime; None when the model has none."""
    if not info.get(name):
        return None
    part = HEADS.get(info[name]) if name == "ranker" else TasteIndex
    if part is None:
        raise BundleError(f"{path}'s model_info.json names the ranking head {info[name]!r}, which this release does "
                          f"not know ({', '.join(HEADS)}); upgrade animerec or retrain.")
    if not (path / f"{name}.npz").is_file():
        raise BundleError(f"{path} is not a complete model artifact: its model_info.json names {what} but "
                          f"{name}.npz is missing. Use the complete folder the train step wrote.")
    loaded = part.from_arrays(read_part(path / f"{name}.npz", name, part.FORMAT_VERSION))
    if loaded.history.shape != shape:
        raise BundleError(f"Model artifact {path} is inconsistent: {name}.npz covers {loaded.history.shape} "
                          f"users x anime, the encoders {shape[0]} x {shape[1]}. Retrain.")
    return loaded


def find_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, found)`` ``[len(ids)]`` of ``ids`` in the sorted ``sorted_ids``: where each would stand, and
    whether it is there (``sorted_ids[positions] == ids``)."""
    positions = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return positions, sorted_ids[positions] == ids


@dataclass
class ModelBundle:
    """A loaded model artifact: numpy scorer, encoders, scale, catalogue and known ratings."""

    path: Path
    info: dict
    scorer: Scorer
    user_ids: np.ndarray
    anime_ids: np.ndarray
    scale: dict
    anime: pd.DataFrame
    ratings: pd.DataFrame
    taste: Any = None  # animerec.taste.TasteIndex: similar anime / users, when the model has one
    sequels: SequelLinks | None = None  # each anime's prerequisite by co-watching (animerec/franchise.py)

    REQUIRED = ("model_info.json", "user_embeddings.npy", "anime_embeddings.npy", "scorer.npz", "encoders.npz",
                "scale.json", "anime.parquet", "ratings.npz")

    @classmethod
    def load(cls, path: str | Path) -> "ModelBundle":
        path = Path(path)
        missing = [name for name in cls.REQUIRED if not (path / name).is_file()]
        if missing:
            raise BundleError(
                f"{path} is not a complete model artifact: missing {', '.join(missing)}. "
                f"Use a folder written by the train step (artifacts/model/vN)."
            )
        info = json.loads((path / "model_info.json").read_text(encoding="utf-8"))
        if info.get("format_version", 0) > FORMAT_VERSION:
            raise BundleError(f"{path} was written by a newer animerec ({info.get('project_version')}); "
                              f"upgrade animerec.")
        encoders = read_arrays(path / "encoders.npz")
        user_ids, anime_ids = encoders["user_ids"], encoders["anime_ids"]
        user_emb = np.load(path / "user_embeddings.npy", mmap_mode="r")
        anime_emb = np.load(path / "anime_embeddings.npy", mmap_mode="r")
        problems = []
        if encoders_fingerprint(user_ids, anime_ids) != info.get("encoders_sha256"):
            problems.append("its encoders.npz is not the one the model was trained with")
        if user_emb.shape[0] != len(user_ids) or user_emb.shape[0] != info.get("num_users"):
            problems.append(f"user_embeddings has {user_emb.shape[0]} rows for {len(user_ids)} encoded users")
        if anime_emb.shape[0] != len(anime_ids) or anime_emb.shape[0] != info.get("num_anime"):
            problems.append(f"anime_embeddings has {anime_emb.shape[0]} rows for {len(anime_ids)} encoded anime")
        if user_emb.shape[1] != info.get("embedding_size"):
            problems.append(f"embedding size {user_emb.shape[1]} differs from model_info's "
                            f"{info.get('embedding_size')}")
        anime = pd.read_parquet(path / "anime.parquet")
        indexed = anime[anime["anime_index"] >= 0]
        if len(indexed) and not np.array_equal(anime_ids[indexed["anime_index"].to_numpy()], indexed["anime_id"].to_numpy()):
            problems.append("its anime table's anime_index does not match the encoders")
        if problems:
            raise BundleError(
                f"Model artifact {path} is inconsistent: {'; '.join(problems)}. It may mix files from different "
                f"datasets; retrain, or use the complete artifact the train step wrote."
            )
        shape = (len(user_ids), len(anime_ids))
        ranker = _optional_part(path, info, "ranker", "a ranking head", shape)
        weights = read_arrays(path / "scorer.npz")
        scorer = Scorer.from_weights(
            user_emb, anime_emb, weights["kernel"], weights["bias"], info["activation"],
            weights["user_bias"] if "user_bias" in weights else None,
            weights["anime_bias"] if "anime_bias" in weights else None,
            weights["preference_bias"] if "preference_bias" in weights else None,
            ranker,
        )
        taste = _optional_part(path, info, "taste", "a taste index", shape)
        sequels = (SequelLinks.from_arrays(read_part(path / "sequels.npz", "sequels", SequelLinks.FORMAT_VERSION))
                   if (path / "sequels.npz").is_file() else None)  # older models: the titles alone
        rows = read_arrays(path / "ratings.npz")
        ratings = pd.DataFrame({k: rows[k] for k in ("user_index", "anime_index", "rating")})
        scale = json.loads((path / "scale.json").read_text(encoding="utf-8"))
        return cls(path, info, scorer, user_ids, anime_ids, scale, anime, ratings, taste, sequels)

    @cached_property
    def ratings_by_user(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every known rating grouped by user, CSR-style: ``(starts [num_users + 1], anime [n], ratings [n])``;
        user ``u``'s anime are ``anime[starts[u]:starts[u + 1]]``, by anime index. Sorted once per model, however
        many recommenders read it (a quarter of a minute for MAL's 57M ratings)."""
        ratings = self.ratings.sort_values(["user_index", "anime_index"], kind="stable")
        counts = np.bincount(ratings["user_index"].to_numpy(), minlength=len(self.user_ids))
        return (np.concatenate([[0], np.cumsum(counts)]), ratings["anime_index"].to_numpy(np.int64),
                ratings["rating"].to_numpy(np.float32))

    @cached_property
    def catalogue_rows(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The catalogue as ``(MAL IDs sorted, {column: values in that order})``: an answer's rows are looked up
        in it (``np.searchsorted``), not found by indexing the whole frame anew for each answer."""
        order = np.argsort(self.anime["anime_id"].to_numpy(), kind="stable")
        frame = self.anime.iloc[order]
        return frame["anime_id"].to_numpy(np.int64), {name: frame[name].to_numpy() for name in frame.columns}

    # ID handling -------------------------------------------------------------------------------
    def to_rating(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled) * (self.scale["max"] - self.scale["min"]) + self.scale["min"]

    def user_index(self, user_id: int) -> int:
        position = np.searchsorted(self.user_ids, user_id)
        if position >= len(self.user_ids) or self.user_ids[position] != user_id:
            sample = ", ".join(str(u) for u in self.user_ids[:5])
            raise BundleError(
                f"Unknown user_id {user_id}: the model knows {len(self.user_ids)} users "
                f"(IDs {self.user_ids.min()}-{self.user_ids.max()}, e.g. {sample})."
            )
        return int(position)

    def anime_index(self, anime_id: int) -> int:
        position = np.searchsorted(self.anime_ids, anime_id)
        if position >= len(self.anime_ids) or self.anime_ids[position] != anime_id:
            raise BundleError(
                f"Anime {anime_id} has no embedding: nobody in the training data rated it, or the ID is not a MAL ID."
            )
        return int(position)

    def predict(self, user_ids, anime_ids) -> np.ndarray:
        """Predicted 1-10 ratings for pairs of original IDs."""
        users = np.array([self.user_index(int(u)) for u in np.atleast_1d(user_ids)], dtype=np.int64)
        anime = np.array([self.anime_index(int(a)) for a in np.atleast_1d(anime_ids)], dtype=np.int64)
        return self.to_rating(self.scorer.score_pairs(users, anime))

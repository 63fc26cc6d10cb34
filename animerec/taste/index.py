"""Taste: anime liked by the same people, and people who like the same anime.

The rating network's embeddings learn who rates what higher; they carry little of "people who
like X also like Y". Similar anime blend two parts, with weights chosen by K-fold
cross-validation (animerec/taste/choice.py):

- **co-occurrence**: the cosine between two anime's columns of the users x anime matrix (who
  rated what); similar users use the same cosine between two users' rows (user-kNN).
- **content** (scikit-learn): TF-IDF of each anime's genres, type, source and studios, plus its
  synopsis where the catalogue has one; it gives anime with few or no ratings sensible neighbours.

:class:`TasteIndex` holds them and answers ``similar_items(anime_index)`` and
``similar_users(user_index or list)``; it needs numpy and scipy only.
"""

from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from animerec.config import TASTE_ITEM_PARTS

logger = logging.getLogger(__name__)


# the parts -------------------------------------------------------------------------------
def content_matrix(anime: pd.DataFrame, num_anime: int, synopsis_weight: float = 0.5) -> sp.csr_matrix:
    """``[num_anime, terms]`` L2-normalised TF-IDF rows, one per ``anime_index`` (0 rows for unknown anime).

    Categorical terms: each genre, the type, the source and each studio (one token each, so
    "Slice of Life" is one term); free text: the synopsis, English stop words removed, weighted
    by ``synopsis_weight``. ``anime`` is the model's anime table (``anime_index`` >= 0 rows are used).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    table = anime[anime["anime_index"] >= 0].sort_values("anime_index")
    index = table["anime_index"].to_numpy(np.int64)

    def tokens(row) -> list[str]:
        out = [f"genre:{g.strip().lower()}" for g in str(row.get("genres") or "").split(",") if g.strip()]
        for column in ("type", "source"):
            value = row.get(column)
            if isinstance(value, str) and value:
                out.append(f"{column}:{value.lower()}")
        for studio in str(row.get("studios") or "").split(","):
            if studio.strip() and studio.strip().lower() not in ("none found", "add some", "nan", "<na>"):
                out.append(f"studio:{studio.strip().lower()}")
        return out

    docs = [tokens(row) for row in table.to_dict("records")]
    blocks = []
    if any(docs):
        vectorizer = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True)
        blocks.append(vectorizer.fit_transform(docs))
    if "synopsis" in table and table["synopsis"].notna().sum() >= 2:
        text = table["synopsis"].fillna("").astype(str).to_numpy()
        try:
            words = TfidfVectorizer(stop_words="english", min_df=2, max_features=30_000, sublinear_tf=True)
            blocks.append(normalize(words.fit_transform(text)) * float(synopsis_weight))
        except ValueError:  # every synopsis empty or made of stop words
            pass
    if not blocks:
        return sp.csr_matrix((num_anime, 1), dtype=np.float32)
    rows = normalize(sp.hstack(blocks).tocsr()).astype(np.float32)
    placed = sp.csr_matrix((np.ones(len(index), np.float32), (index, np.arange(len(index)))),
                           shape=(num_anime, len(index)))
    return (placed @ rows).tocsr()


def _row_counts(matrix: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows].sum(axis=0)`` ``[matrix.shape[1]]`` float32 of a binary matrix (who rated what), reading
    only those rows (not every nonzero: at full MyAnimeList size a niche anime's co-rating counts then cost its
    raters' lists, not 46M ratings), in a compiled loop (:func:`animerec.kernels.count_columns`)."""
    from animerec import kernels  # numba: imported and compiled (or read from its disk cache) on first use

    return kernels.count_columns(matrix.indptr, matrix.indices, rows, matrix.shape[1]).astype(np.float32)


# the index --------------------------------------------------------------------------------------
@dataclass
class TasteIndex:
    """Similar anime from co-occurrence and content similarity; similar users from co-occurrence.

    ``history`` ``[num_users, num_anime]`` binary CSR (who rated what; train + valid in a stored
    model); ``content`` ``[num_anime, terms]`` unit TF-IDF rows; ``item_weights`` the blend, e.g.
    ``{"cooc": 1.0}`` or ``{"cooc": 1.0, "content": 0.2}``.
    """

    FORMAT_VERSION: ClassVar[int] = 2  # 2: no learned part nor user blend; an EASE part (removed) is not read

    history: sp.csr_matrix
    content: sp.csr_matrix | None = None
    item_weights: dict = field(default_factory=lambda: {"cooc": 1.0})
    corated: np.ndarray | None = None  # [num_anime, num_anime] co-rating counts, when many queries come (not stored)

    def __post_init__(self) -> None:
        self.history = sp.csr_matrix(self.history, dtype=np.float32)
        self.anime_counts = np.bincount(self.history.indices, minlength=self.num_anime).astype(np.float32)
        self.user_counts = np.diff(self.history.indptr).astype(np.float32)

    @functools.cached_property
    def by_anime(self) -> sp.csr_matrix:
        """``[num_anime, num_users]``: who rated each anime (the history's transpose, 410 MB at full MyAnimeList
        size: made on first use, so a training run that only stores the index never holds it)."""
        return self.history.T.tocsr()

    @property
    def num_anime(self) -> int:
        return self.history.shape[1]

    # similar anime ------------------------------------------------------------------------------
    def item_parts(self, anime_index: int) -> dict[str, np.ndarray]:
        """Each part's similarity ``[num_anime]`` of every anime to one anime."""
        # co-rating counts [num_anime]: a row of the whole matrix when it is held, else from the raters' lists
        if self.corated is not None:
            together = self.corated[anime_index]
        else:
            by_anime = self.by_anime
            together = _row_counts(self.history, by_anime.indices[by_anime.indptr[anime_index]:by_anime.indptr[anime_index + 1]])
        denom = np.sqrt(self.anime_counts[anime_index] * self.anime_counts)
        parts = {"cooc": (together / np.maximum(denom, 1e-12)).astype(np.float32)}
        if self.content is not None:
            parts["content"] = np.asarray((self.content @ self.content[anime_index].T).todense()).ravel()
        return {name: _scaled(part, anime_index) for name, part in parts.items()}

    def similar_items(self, anime_index: int, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Blended similarity ``[num_anime]`` of every anime to ``anime_index`` (itself included), in [0, 1] but for
        the query's own: each part is scaled to at most 1 and the blend divided by its weights' sum."""
        weights = self.item_weights if weights is None else weights
        return blend(self.item_parts(anime_index), weights) / (sum(w for w in weights.values() if w > 0) or 1.0)

    # similar users ------------------------------------------------------------------------------
    def similar_users(self, user_index: int | None = None, listed: np.ndarray | None = None) -> np.ndarray:
        """Co-occurrence cosine ``[num_users]`` of every training user to a user or to someone who rated
        ``listed``, scaled by the largest (the user's own value left out)."""
        if listed is None:
            listed = self.history.indices[self.history.indptr[user_index]:self.history.indptr[user_index + 1]]
        listed = np.unique(np.asarray(listed, np.int64))
        together = _row_counts(self.by_anime, listed)  # shared anime with every user [num_users]
        denom = np.sqrt(max(len(listed), 1) * self.user_counts)
        return _scaled((together / np.maximum(denom, 1e-12)).astype(np.float32), user_index)

    # storage ------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {"history_indptr": self.history.indptr.astype(np.int64),
               "history_indices": self.history.indices.astype(np.int32),
               "history_shape": np.array(self.history.shape, np.int64)}
        if self.content is not None:  # sparse [num_anime, terms] rows
            out.update({"content_indptr": self.content.indptr.astype(np.int64),
                        "content_indices": self.content.indices.astype(np.int32),
                        "content_data": self.content.data.astype(np.float32),
                        "content_shape": np.array(self.content.shape, np.int64)})
        parts = sorted(self.item_weights)
        out["item_parts"] = np.array(parts)
        out["item_weights"] = np.array([self.item_weights[p] for p in parts], np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "TasteIndex":
        """The index ``arrays`` stored; an older index's learned or EASE part (both removed) is not read."""
        indices = arrays["history_indices"]
        history = sp.csr_matrix((np.ones(len(indices), np.float32), indices, arrays["history_indptr"]),
                                shape=tuple(int(x) for x in arrays["history_shape"]))
        weights = {str(p): float(w) for p, w in zip(arrays["item_parts"], arrays["item_weights"])
                   if str(p) in TASTE_ITEM_PARTS}

        content = None
        if "content_indptr" in arrays and "content_shape" in arrays:
            content = sp.csr_matrix((arrays["content_data"], arrays["content_indices"], arrays["content_indptr"]),
                                    shape=tuple(int(x) for x in arrays["content_shape"]))
        return cls(history, content, weights or {"cooc": 1.0})


def _scaled(part: np.ndarray, query: int | None) -> np.ndarray:
    """``part`` divided by its largest value other than the query's own, so that parts blend on one scale."""
    part = np.asarray(part, np.float32)
    before, after = (part, part[:0]) if query is None else (part[:query], part[query + 1:])  # views, no copy
    top = float(max(before.max(initial=-np.inf), after.max(initial=-np.inf)))
    return part / top if top > 0 else part


def blend(parts: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``sum(weights[p] * parts[p])`` over the parts with a weight (a missing part counts 0)."""
    out = None
    for name, weight in weights.items():
        if weight and name in parts:
            term = float(weight) * parts[name]
            out = term if out is None else out + term
    if out is None:
        out = np.zeros_like(next(iter(parts.values())))
    return np.asarray(out, np.float32)


def weight_grid(grid: Mapping[str, list[float]]) -> list[dict[str, float]]:
    """Every combination of the parts' weights but all-zero ones, e.g. ``{"cooc": [1], "content": [0, 0.2]}``."""
    names = list(grid)
    out = []
    for values in itertools.product(*(grid[n] for n in names)):
        if any(values):
            out.append(dict(zip(names, map(float, values))))
    return out


def tail_size(num_anime: int) -> int:
    """How many of the most-rated anime the tail view leaves out: 200, or a tenth of a small catalogue."""
    return min(200, num_anime // 10)


def top_excluding(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` not in ``exclude``, best first (ties: lower index)."""
    scores = np.array(scores, np.float32, copy=True)
    scores[np.asarray(exclude, np.int64)] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
    return top[np.lexsort((top, -scores[top]))]

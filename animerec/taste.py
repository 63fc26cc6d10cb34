"""Taste: anime liked by the same people, and people who like the same anime.

The rating network's embeddings learn who rates what higher; they carry little of "people who
like X also like Y". This module gives similar anime and similar users a geometry chosen by the
people themselves, blended from three parts whose weights are chosen on the valid split:

- **learned** (:class:`TasteModel`, Keras): a multinomial autoencoder over each user's list
  (Liang et al. 2018, "Mult-DAE", with a linear encoder and a cosine output layer). A user's list
  ``x`` ``[num_anime]`` is encoded to a unit taste vector ``h = normalize(x W)`` ``[d]``; one
  softmax over the whole catalogue, ``h · normalize(v_j) / temperature + b_j``, is fitted to the
  same list. Anime that the same people watch get nearby ``v_j``; popularity goes to ``b_j``, not
  into the vectors. A new person is encoded from their list: no fitting at query time.
- **co-occurrence**: the cosine between two anime's columns of the users x anime matrix (who
  rated what), and between two users' rows; with ``shrink`` added to the denominator so that a
  pair seen once does not look certain.
- **content** (scikit-learn): TF-IDF of each anime's genres, type, source and studios, plus its
  synopsis where the catalogue has one; it gives anime with few or no ratings sensible neighbours.

:class:`TasteIndex` holds the three and answers ``similar_items(anime_index)`` and
``similar_users(user_index or list)``, each a blended score over every anime or user.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from animerec.config import TasteConfig
from animerec.evaluation import Interactions, similar_item_metrics, similar_user_metrics
from animerec.memory import phase
from animerec.ranking import ease_weights, gram_matrix, most_rated, symmetrise_lower
from animerec.ranking import interaction_matrix as history_matrix  # who rated what: [num_users, num_anime] binary

logger = logging.getLogger(__name__)

VALID_USERS = 5_000  # users whose valid anime give the taste model's validation loss (a seeded sample)


# the three parts -------------------------------------------------------------------------------
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


def ease_neighbours(history: sp.csr_matrix, l2_values, keep: int = 100,
                    max_items: int | None = None) -> dict[float, sp.csr_matrix]:
    """EASE's item-item weights ``B`` (Steck 2019) for each L2 in ``l2_values``, each row cut to its ``keep``
    largest positive weights: ``{l2: [num_anime, num_anime] CSR}``. Row ``q`` says which anime having
    watched ``q`` predicts; one Gram matrix serves every L2 (animerec/ranking.py computes it). With
    ``max_items``, only that many of the most-rated anime get rows and columns (each L2 costs an inversion
    whose time grows with the cube of the anime: 42 s at 17.5k anime on 2 cores, about 1 s at 5,000)."""
    n = history.shape[1]
    # most-rated first: the fastest Gram order
    rated = most_rated(np.bincount(history.indices, minlength=n))[:max_items]
    gram = gram_matrix(history[:, rated])
    out = {}
    for position, l2 in enumerate(l2_values):
        last = position == len(l2_values) - 1
        weights = ease_weights(gram, float(l2), overwrite=last)
        top = _top_rows(weights, keep).tocoo()  # in ``rated`` order: back to anime indices
        out[float(l2)] = sp.csr_matrix((top.data, (rated[top.row], rated[top.col])), shape=(n, n))
        del weights
    return out


def _top_rows(dense: np.ndarray, keep: int, block: int = 2048) -> sp.csr_matrix:
    """``dense`` ``[n, n]`` as CSR with each row's ``keep`` largest positive entries."""
    n = dense.shape[0]
    keep = min(keep, n)
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        part = dense[start:start + block]
        top = np.argpartition(-part, keep - 1, axis=1)[:, :keep] if n > keep else np.tile(np.arange(n), (len(part), 1))
        values = np.take_along_axis(part, top, axis=1)
        mask = values > 0
        rows.append(np.nonzero(mask)[0] + start)
        cols.append(top[mask])
        vals.append(values[mask])
    return sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n, n))


def _row_sum(matrix: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows].sum(axis=0)`` ``[matrix.shape[1]]`` float32, reading only those rows (not every nonzero:
    at full MyAnimeList size a niche anime's co-rating counts then cost its raters' lists, not 46M ratings)."""
    rows = np.asarray(rows, np.int64)
    pick = sp.csr_matrix((np.ones(len(rows), np.float32), (np.zeros(len(rows), np.int64), rows)),
                         shape=(1, matrix.shape[0]))
    return (pick @ matrix).toarray().ravel().astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# the Keras model ----------------------------------------------------------------------------------
def _keras():
    import keras

    return keras


def build_taste_model(num_anime: int, embedding_size: int = 64, dropout: float = 0.5, temperature: float = 0.1,
                      seed: int = 42):
    """The :class:`TasteModel` (made here so that importing this module needs no TensorFlow)."""
    keras = _keras()

    @keras.saving.register_keras_serializable(package="animerec")
    class TasteModel(keras.Model):
        """Multinomial autoencoder over users' lists, with a cosine output layer.

        Input: a batch of lists ``[batch, num_anime]`` (1 where the user rated the anime).
        Output: logits ``[batch, num_anime]`` of one softmax over the catalogue per user.
        Weights: ``encoder`` ``[num_anime, d]`` (list -> taste vector), ``anime_taste``
        ``[num_anime, d]`` (an anime's taste vector; cosine geometry), ``anime_bias`` ``[num_anime]``
        (how much everyone watches it).
        """

        def __init__(self, num_anime: int, embedding_size: int = 64, dropout: float = 0.5,
                     temperature: float = 0.1, seed: int = 42, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.num_anime, self.embedding_size = int(num_anime), int(embedding_size)
            self.dropout_rate, self.temperature, self.seed = float(dropout), float(temperature), int(seed)
            self.dropout = keras.layers.Dropout(self.dropout_rate, seed=self.seed)
            self.encoder = keras.layers.Dense(self.embedding_size, use_bias=False, name="encoder",
                                              kernel_initializer=keras.initializers.GlorotUniform(self.seed))
            self.anime_taste = self.add_weight(shape=(self.num_anime, self.embedding_size), name="anime_taste",
                                               initializer=keras.initializers.GlorotUniform(self.seed + 1))
            self.anime_bias = self.add_weight(shape=(self.num_anime,), name="anime_bias", initializer="zeros")

        def build(self, input_shape=None) -> None:
            self.encoder.build((None, self.num_anime))
            self.built = True

        def encode(self, lists, training: bool = False):
            """Unit taste vectors ``[batch, d]`` of lists ``[batch, num_anime]``."""
            return keras.ops.normalize(self.encoder(self.dropout(lists, training=training)), axis=-1)

        def call(self, lists, training: bool = False):
            taste = self.encode(lists, training)
            anime = keras.ops.normalize(self.anime_taste, axis=-1)
            return keras.ops.matmul(taste, keras.ops.transpose(anime)) / self.temperature + self.anime_bias

        def get_config(self) -> dict:
            return {**super().get_config(), "num_anime": self.num_anime, "embedding_size": self.embedding_size,
                    "dropout": self.dropout_rate, "temperature": self.temperature, "seed": self.seed}

    model = TasteModel(num_anime, embedding_size, dropout, temperature, seed, name="taste")
    model.build()
    return model


def _batches(rows: sp.csr_matrix, target: sp.csr_matrix | None, batch_size: int, *, shuffle: bool, seed: int,
             max_users: int | None = None):
    """A Keras ``PyDataset`` of dense ``(lists, target distribution)`` batches from CSR rows (users with an empty
    target are left out; at most ``max_users`` of them, a seeded sample); the dense batches exist one at a time."""
    keras = _keras()
    target = rows if target is None else target
    users = np.flatnonzero(np.diff(target.indptr) > 0)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))

    class Lists(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.order, self.epoch = users, 0

        def __len__(self):
            return -(-len(users) // batch_size)

        def on_epoch_end(self):
            self.epoch += 1
            if shuffle:
                self.order = np.random.default_rng([seed, self.epoch]).permutation(users)

        def __getitem__(self, i):
            batch = self.order[i * batch_size:(i + 1) * batch_size]
            x = rows[batch].toarray()
            y = target[batch].toarray()
            y /= np.maximum(y.sum(axis=1, keepdims=True), 1e-12)
            return x, y

    data = Lists()
    if shuffle:
        data.order = np.random.default_rng([seed, 0]).permutation(users)
    return data


@dataclass
class TasteFit:
    """A fitted :class:`TasteModel`'s arrays and its history (one row per epoch)."""

    encoder: np.ndarray  # [num_anime, d]
    anime_vectors: np.ndarray  # [num_anime, d], unit rows
    anime_bias: np.ndarray  # [num_anime]
    history: list[dict] = field(default_factory=list)


def fit_taste_model(train: sp.csr_matrix, valid_target: sp.csr_matrix | None, cfg: TasteConfig, *,
                    seed: int = 42, verbose: int = 0, strategy=None,
                    on_epoch_end: Callable[[dict], None] | None = None) -> TasteFit:
    """Fit the taste model on users' ``train`` lists ``[num_users, num_anime]`` (binary CSR).

    With ``valid_target`` (each user's valid anime), the validation loss is the likelihood of a
    user's valid anime given their train list (over at most :data:`VALID_USERS` users: at full
    MyAnimeList size scoring all of them cost a third of an epoch); training stops early on it and
    keeps the best weights. ``cfg`` is ``model.taste``.
    """
    keras = _keras()
    keras.utils.set_random_seed(seed)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = build_taste_model(train.shape[1], int(cfg.embedding_size), float(cfg.dropout),
                                  float(cfg.temperature), seed)
        model.compile(optimizer=keras.optimizers.Adam(float(cfg.learning_rate)),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    batch_size = int(cfg.batch_size)
    data = _batches(train, None, batch_size, shuffle=True, seed=seed, max_users=cfg.max_users)
    valid = None
    if valid_target is not None and valid_target.nnz:
        valid = _batches(train, valid_target, max(batch_size, 1024), shuffle=False, seed=seed,
                         max_users=VALID_USERS)
    rows: list[dict] = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "taste_loss": float(logs["loss"]),
                   "taste_val_loss": float(logs.get("val_loss", logs["loss"])),
                   "taste_seconds": time.perf_counter() - self.started}
            rows.append(row)
            logger.info("taste epoch %d: loss %.4f val_loss %.4f (%.1fs)", row["epoch"], row["taste_loss"],
                        row["taste_val_loss"], row["taste_seconds"])
            if on_epoch_end:
                on_epoch_end(row)

    callbacks = [Record()]
    if valid is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(cfg.patience),
                                                       restore_best_weights=True))
    model.fit(data, validation_data=valid, epochs=int(cfg.epochs), callbacks=callbacks,
              verbose=1 if verbose else 0)
    return TasteFit(np.asarray(model.encoder.get_weights()[0], np.float32),
                    _unit(keras.ops.convert_to_numpy(model.anime_taste)),
                    np.asarray(keras.ops.convert_to_numpy(model.anime_bias), np.float32), rows)


def encode_lists(encoder: np.ndarray, rows: sp.csr_matrix, chunk: int = 65_536) -> np.ndarray:
    """Unit taste vectors ``[n, d]`` of lists ``rows`` ``[n, num_anime]`` (the model's encoder, no dropout)."""
    out = np.empty((rows.shape[0], encoder.shape[1]), np.float32)
    for start in range(0, rows.shape[0], chunk):
        out[start:start + chunk] = _unit(np.asarray(rows[start:start + chunk] @ encoder))
    return out


# the index --------------------------------------------------------------------------------------
@dataclass
class TasteIndex:
    """Similar anime and similar users from learned, co-occurrence and content similarity.

    ``history`` ``[num_users, num_anime]`` binary CSR (who rated what; train + valid in a stored
    model); ``anime_vectors`` ``[num_anime, d]`` and ``user_vectors`` ``[num_users, d]`` unit
    taste vectors, ``encoder`` ``[num_anime, d]`` (folds in a new list); ``content``
    ``[num_anime, terms]`` unit TF-IDF rows; ``item_weights`` / ``user_weights`` the blend, e.g.
    ``{"learned": 0.5, "cooc": 1.0, "content": 0.1}``; ``shrink`` damps co-occurrence cosines of
    rarely seen pairs.
    """

    history: sp.csr_matrix
    anime_vectors: np.ndarray | None = None
    user_vectors: np.ndarray | None = None
    encoder: np.ndarray | None = None
    content: sp.csr_matrix | None = None
    ease: sp.csr_matrix | None = None
    item_weights: dict = field(default_factory=lambda: {"cooc": 1.0})
    user_weights: dict = field(default_factory=lambda: {"cooc": 1.0})
    shrink: float = 0.0
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
        parts = {}
        raters = self.by_anime.indices[self.by_anime.indptr[anime_index]:self.by_anime.indptr[anime_index + 1]]
        # co-rating counts [num_anime]: a row of the whole matrix when it is held, else from the raters' lists
        together = self.corated[anime_index] if self.corated is not None else _row_sum(self.history, raters)
        denom = np.sqrt(self.anime_counts[anime_index] * self.anime_counts) + self.shrink
        parts["cooc"] = (together / np.maximum(denom, 1e-12)).astype(np.float32)
        if self.anime_vectors is not None:
            # an anime nobody rated in the history has an untrained vector: no learned similarity, either way
            seen = self.anime_counts > 0
            parts["learned"] = (self.anime_vectors @ self.anime_vectors[anime_index]) * seen * seen[anime_index]
        if self.content is not None:
            parts["content"] = np.asarray((self.content @ self.content[anime_index].T).todense()).ravel()
        if self.ease is not None:
            parts["ease"] = np.asarray(self.ease[anime_index].todense()).ravel()
        return {name: _scaled(part, anime_index) for name, part in parts.items()}

    def similar_items(self, anime_index: int, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Blended similarity ``[num_anime]`` of every anime to ``anime_index`` (itself included)."""
        return blend(self.item_parts(anime_index), self.item_weights if weights is None else weights)

    # similar users ------------------------------------------------------------------------------
    def user_parts(self, user_index: int | None = None, listed: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each part's similarity ``[num_users]`` to a training user, or to someone who rated ``listed``."""
        if listed is None:
            listed = self.history.indices[self.history.indptr[user_index]:self.history.indptr[user_index + 1]]
        listed = np.unique(np.asarray(listed, np.int64))
        parts = {}
        together = _row_sum(self.by_anime, listed)  # shared anime with every user [num_users]
        denom = np.sqrt(max(len(listed), 1) * self.user_counts)
        parts["cooc"] = (together / np.maximum(denom, 1e-12)).astype(np.float32)
        if self.user_vectors is not None:
            if user_index is not None:
                vector = self.user_vectors[user_index]
            else:
                vector = self.encode(listed)
            parts["learned"] = self.user_vectors @ vector
        return {name: _scaled(part, user_index) for name, part in parts.items()}

    def similar_users(self, user_index: int | None = None, listed: np.ndarray | None = None,
                      weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Blended similarity ``[num_users]`` of every training user to a user or a list."""
        return blend(self.user_parts(user_index, listed), self.user_weights if weights is None else weights)

    def encode(self, listed: np.ndarray) -> np.ndarray:
        """The unit taste vector ``[d]`` of someone who rated ``listed`` (anime indices)."""
        return _unit(self.encoder[np.asarray(listed, np.int64)].sum(axis=0))

    # storage ------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {"history_indptr": self.history.indptr.astype(np.int64),
               "history_indices": self.history.indices.astype(np.int32),
               "history_shape": np.array(self.history.shape, np.int64),
               "shrink": np.array(self.shrink, np.float64)}
        for name in ("anime_vectors", "user_vectors", "encoder"):
            if getattr(self, name) is not None:
                out[name] = np.asarray(getattr(self, name), np.float32)
        for name in ("ease", "content"):  # sparse [num_anime, ...] rows
            matrix = getattr(self, name)
            if matrix is not None:
                out.update({f"{name}_indptr": matrix.indptr.astype(np.int64),
                            f"{name}_indices": matrix.indices.astype(np.int32),
                            f"{name}_data": matrix.data.astype(np.float32),
                            f"{name}_shape": np.array(matrix.shape, np.int64)})
        for kind, weights in (("item", self.item_weights), ("user", self.user_weights)):
            parts = sorted(weights)
            out[f"{kind}_parts"] = np.array(parts)
            out[f"{kind}_weights"] = np.array([weights[p] for p in parts], np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "TasteIndex":
        indices = arrays["history_indices"]
        history = sp.csr_matrix((np.ones(len(indices), np.float32), indices, arrays["history_indptr"]),
                                shape=tuple(int(x) for x in arrays["history_shape"]))
        weights = {kind: dict(zip((str(p) for p in arrays[f"{kind}_parts"]), map(float, arrays[f"{kind}_weights"])))
                   for kind in ("item", "user")}
        def sparse(name: str) -> sp.csr_matrix | None:
            if f"{name}_indptr" not in arrays or f"{name}_shape" not in arrays:
                return None
            return sp.csr_matrix((arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
                                 shape=tuple(int(x) for x in arrays[f"{name}_shape"]))

        content, ease = sparse("content"), sparse("ease")
        return cls(history, arrays.get("anime_vectors"), arrays.get("user_vectors"), arrays.get("encoder"), content,
                   ease, weights["item"], weights["user"], float(arrays["shrink"]))


def _scaled(part: np.ndarray, query: int | None) -> np.ndarray:
    """``part`` divided by its largest value other than the query's own, so that parts blend on one scale."""
    part = np.asarray(part, np.float32)
    others = part if query is None else np.delete(part, query)
    top = float(others.max()) if len(others) else 0.0
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
    """Every combination of the parts' weights but all-zero ones, e.g. ``{"cooc": [1], "learned": [0, 0.5]}``."""
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


# fitting and choosing on valid --------------------------------------------------------------------
@dataclass
class TasteResult:
    """The fitted index (on train + valid) and what was chosen on valid."""

    index: TasteIndex
    report: dict


def fit_taste(cfg: TasteConfig, train: pd.DataFrame, valid: pd.DataFrame, num_users: int, num_anime: int,
              anime: pd.DataFrame, *, k: int = 10, relevance_threshold: float = 8.0, seed: int = 42,
              verbose: int = 0, strategy=None, on_epoch_end=None) -> TasteResult:
    """Fit the taste model on train (early-stopped on valid), choose the blends on valid, refit the rest.

    The item blend maximises the mean of valid hit@k and its tail view (the 200 most-rated anime
    neither candidates nor relevant, so a blend cannot win by popularity alone); the user blend
    maximises valid recall@k of the neighbours' favourites. The stored index then knows train +
    valid: co-occurrence counts over both, user taste vectors encoded from both lists (the
    encoder needs no refit), the anime vectors as fitted on train. ``cfg`` is ``model.taste``.
    """
    def matrix(*frames):
        users = np.concatenate([f["user_index"].to_numpy(np.int64) for f in frames])
        items = np.concatenate([f["anime_index"].to_numpy(np.int64) for f in frames])
        return history_matrix(users, items, num_users, num_anime)

    started = time.perf_counter()
    item_grid = weight_grid(cfg.item_weights)
    user_grid = weight_grid(cfg.user_weights)
    learned = any(w.get("learned") for w in item_grid + user_grid)
    x_train = matrix(train)
    fitted = None
    if learned:
        with phase("the taste model"):
            fitted = fit_taste_model(x_train, matrix(valid) if len(valid) else None, cfg, seed=seed, verbose=verbose,
                                     strategy=strategy, on_epoch_end=on_epoch_end)
    uses_content = any(w.get("content") for w in item_grid)
    content = content_matrix(anime, num_anime) if uses_content else None
    ease_l2 = [float(v) for v in cfg.ease_l2] if any(w.get("ease") for w in item_grid) else []
    ease = {}
    if ease_l2:
        with phase("EASE neighbours on train"):
            ease = ease_neighbours(x_train, ease_l2, int(cfg.ease_keep), cfg.ease_items)

    def index_for(history: sp.csr_matrix, item_weights=None, user_weights=None, ease_rows=None) -> TasteIndex:
        return TasteIndex(history, fitted.anime_vectors if fitted else None,
                          encode_lists(fitted.encoder, history) if fitted else None,
                          fitted.encoder if fitted else None, content, ease_rows,
                          item_weights or {"cooc": 1.0}, user_weights or {"cooc": 1.0}, float(cfg.shrink))

    report: dict[str, Any] = {}
    item_weights, user_weights = item_grid[0], user_grid[0]
    if len(valid) and (len(item_grid) > 1 or len(user_grid) > 1):
        tuning = index_for(x_train)
        # thousands of queries: every co-rating count at once (one pass over the ratings, 1.2 GB at full MAL size)
        # costs less than each query's raters' lists (a popular anime's: 18M ratings at full size)
        tuning.corated = gram_matrix(x_train)
        symmetrise_lower(tuning.corated)
        item_parts = functools.lru_cache(maxsize=2048)(tuning.item_parts)  # both views query the same anime
        train_i, valid_i = Interactions.from_frame(train), Interactions.from_frame(valid)
        tail = np.argsort(-np.bincount(train_i.anime, minlength=num_anime), kind="stable")[:tail_size(num_anime)]
        tune_users = cfg.tune_users
        settings = [(l2, w) for w in item_grid for l2 in (ease_l2 if w.get("ease") else [None])]
        key = lambda w, l2=None: ",".join(f"{n}={v:g}" for n, v in sorted(w.items())) + (  # noqa: E731
            f",ease_l2={l2:g}" if l2 is not None else "")

        def similar(q, exclude, n):
            parts = item_parts(q)
            by_l2 = {l2: _scaled(np.asarray(rows[q].todense()).ravel(), q) for l2, rows in ease.items()}
            return {key(w, l2): top_excluding(blend({**parts, "ease": by_l2[l2]} if l2 is not None else parts, w),
                                              np.append(exclude, q), n) for l2, w in settings}

        def neighbours(u, n):
            parts = tuning.user_parts(u)
            return {key(w): top_excluding(blend(parts, w), [u], n) for w in user_grid}

        with phase("choosing the taste blends on valid"):
            if len(item_grid) > 1:
                common = dict(k=k, relevance_threshold=relevance_threshold, max_users=tune_users, seed=seed)
                overall = similar_item_metrics(similar, train_i, valid_i, **common)
                tailed = similar_item_metrics(similar, train_i, valid_i, excluded=tail, **common)
                views = {name: [overall[name][f"hit_at_{k}"], tailed.get(name, {}).get(f"hit_at_{k}", np.nan)]
                         for name in overall}
                score = {name: float(np.nanmean(v)) if not np.isnan(v).all() else np.nan for name, v in views.items()}
                chosen_l2, best = max(settings, key=lambda s: np.nan_to_num(score[key(s[1], s[0])], nan=-1.0))
                item_weights = best
                report["ease_l2"] = chosen_l2
                report["valid_similar_anime_hit_at_10"] = overall[key(best, chosen_l2)][f"hit_at_{k}"]
                report["valid_similar_anime_tail_hit_at_10"] = views[key(best, chosen_l2)][1]
                report["item_grid"] = views
            if len(user_grid) > 1:
                found = similar_user_metrics(neighbours, train_i, valid_i, num_anime, k=k,
                                             relevance_threshold=relevance_threshold, max_users=tune_users, seed=seed)
                best = max(user_grid, key=lambda w: np.nan_to_num(found[key(w)][f"recall_at_{k}"], nan=-1.0))
                user_weights = best
                report["valid_similar_users_recall_at_10"] = found[key(best)][f"recall_at_{k}"]
                report["user_grid"] = {name: found[name][f"recall_at_{k}"] for name in found}
        item_parts.cache_clear()  # up to 2,048 queries' parts: half a GB at full size
        del tuning, item_parts
    report.update(item_weights=item_weights, user_weights=user_weights)
    logger.info("Taste blends chosen on valid: similar anime %s, similar users %s", item_weights, user_weights)
    if not item_weights.get("ease"):
        chosen_l2 = None
    elif len(item_grid) == 1 or not len(valid):
        chosen_l2 = ease_l2[0]
    else:
        chosen_l2 = report["ease_l2"]
    report["ease_l2"] = chosen_l2
    ease = {}  # the train-only EASE rows are no longer needed
    both = matrix(train, valid)
    ease_rows = None
    if chosen_l2 is not None:
        with phase("EASE neighbours on train + valid"):
            ease_rows = ease_neighbours(both, [chosen_l2], int(cfg.ease_keep), cfg.ease_items)[chosen_l2]
    final = index_for(both, item_weights, user_weights, ease_rows)
    if not item_weights.get("content"):
        final.content = None  # chosen out: not stored
    if not item_weights.get("learned") and not user_weights.get("learned"):
        final.anime_vectors = final.user_vectors = final.encoder = None
    report["fit_seconds"] = time.perf_counter() - started
    if fitted is not None and fitted.history:
        report["model_epoch_seconds"] = fitted.history[0]["taste_seconds"]
        report["model_epochs_run"] = len(fitted.history)
    return TasteResult(final, report)

"""The one typed schema of the pipeline configuration, and how overrides travel.

``config.yaml`` holds the values and their comments; this module holds their types, ranges and
choices, once. :func:`validate_config` checks a composed configuration against the schema
before any step starts (``main.py``, every component, the tests' configs): wrong types,
out-of-range values, unknown choices and unknown keys all come back together as one
:class:`~animerec.errors.ConfigError` naming each key, the value given and what is allowed.
Values are converted where that is lossless (an int where a float is expected, one string
where a list is expected), so the steps can trust the types they read.

:func:`split_overrides` / :func:`join_overrides` carry Hydra overrides through one string (the
``hydra_options`` parameter of ``mlflow run``, a component's ``--overrides``): whitespace inside
quotes or brackets stays, so ``recs.anime="Cowboy Bebop"`` and
``recs.genres=[Action,"Slice of Life"]`` arrive unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from animerec.errors import ConfigError
from animerec.steps import INPUTS

TYPES = ("TV", "Movie", "OVA", "ONA", "Special", "Music")
INITIALIZERS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal", "lecun_uniform",
                "random_normal", "random_uniform", "truncated_normal", "orthogonal", "variance_scaling")
ACTIVATIONS = ("sigmoid", "linear", "relu", "softplus", "tanh")
LOSSES = ("binary_crossentropy", "mean_squared_error", "mse", "mean_absolute_error", "mae", "huber")
SCHEDULES = ("rampup_decay", "cosine", "constant")
TASTE_ITEM_PARTS = ("learned", "cooc", "content", "ease")  # model.taste.item_weights (animerec/taste.py)
TASTE_USER_PARTS = ("learned", "cooc")  # model.taste.user_weights
WANDB_MODES = ("online", "offline", "disabled")
STRATEGIES = ("auto", "tpu", "gpu", "cpu", "multi_worker")  # train.strategy (animerec/strategy.py)
TRAINERS = ("lazy", "keras")  # train.trainer
SEQUEL_MODES = ("hide_unstarted", "hide_all", "show")  # recs.sequels (animerec/franchise.py)
METRICS = ("valid_ndcg_at_10", "valid_recall_at_10", "valid_rmse", "valid_mae")  # model:best reads valid only


@dataclass(frozen=True)
class Spec:
    """One key: its type, range and choices.

    Types: ``int``, ``float``, ``bool``, ``str``, ``list`` and ``floats`` (one number or a list of
    them, stored as a list: a grid to choose from on the valid split).
    """

    type: str
    optional: bool = False
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min itself excluded
    max_open: bool = False
    choices: tuple | None = None
    items: tuple | None = None  # allowed list items (case-insensitive), for lists
    help: str = ""

    def allowed(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.type == "floats":
            bounds = " ".join(filter(None, [f"{'>' if self.min_open else '>='} {self.min:g}" if self.min is not None else "",
                                            f"{'<' if self.max_open else '<='} {self.max:g}" if self.max is not None else ""]))
            text = f"a number or a list of numbers such as [100,300]{' each ' + bounds if bounds else ''}"
        elif self.type == "list":
            text = "a list such as [A,B]" + (f" of {', '.join(self.items)}" if self.items else "")
        else:
            noun = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[self.type]
            bounds = []
            if self.min is not None:
                bounds.append(f"{'>' if self.min_open else '>='} {self.min:g}")
            if self.max is not None:
                bounds.append(f"{'<' if self.max_open else '<='} {self.max:g}")
            text = noun + (" " + " and ".join(bounds) if bounds else "")
        if self.optional:
            text += ", or null"
        return text + (f" ({self.help})" if self.help else "")


def _int(**kw) -> Spec:
    return Spec("int", **kw)


def _float(**kw) -> Spec:
    return Spec("float", **kw)


def _str(**kw) -> Spec:
    return Spec("str", **kw)


BOOL = Spec("bool")
OPT_STR = Spec("str", optional=True)
RATING = dict(min=1, max=10)

# The schema: nested dicts of Spec, mirroring config.yaml. A callable checks a key with its own rule.
SCHEMA: dict[str, Any] = {
    "main": {
        "steps": "steps",
        "artifact_root": _str(),
        "experiment_name": _str(),
        "verify_artifacts": BOOL,
        "mlflow_copy_max_mb": _float(min=0, optional=True),
    },
    "wandb": {
        "project": _str(),
        "entity": OPT_STR,
        "mode": _str(optional=True, choices=WANDB_MODES),
        "group": OPT_STR,
        "dir": OPT_STR,
    },
    "data": {
        "source": _str(choices=("demo", "url", "kaggle", "local")),
        "demo": {
            "num_users": _int(min=1),
            "min_ratings_per_user": _int(min=1),
            "max_ratings_per_user": _int(min=1),
            "min_members": _int(min=0),
            "seed": _int(),
        },
        "anime_url": OPT_STR,
        "ratings_url": OPT_STR,
        "anime_sha256": OPT_STR,
        "ratings_sha256": OPT_STR,
        "kaggle_dataset": _str(),
        "kaggle_anime_file": _str(),
        "kaggle_ratings_file": _str(),
        "anime_path": OPT_STR,
        "ratings_path": OPT_STR,
        "min_user_ratings": _int(min=1),
        "min_anime_ratings": _int(min=1),
        "drop_plan_to_watch": BOOL,
        "drop_unwatched": BOOL,
        "drop_half_watched": BOOL,
        "unknown_anime": _str(choices=("error", "drop")),
        "test_fraction": _float(min=0, max=1, max_open=True),
        "valid_fraction": _float(min=0, max=1, max_open=True),
        "split_seed": _int(),
        "chunk_rows": _int(min=1000),
    },
    "inputs": {artifact: OPT_STR for artifact in INPUTS},  # exact versions to read (animerec/steps)
    "model": {
        "name": _str(),
        "embedding_size": _int(min=1, max=4096),
        "kernel_initializer": _str(choices=INITIALIZERS),
        "l2": _float(min=0),
        "activation": _str(choices=ACTIVATIONS),
        "loss": _str(choices=LOSSES),
        "use_bias": BOOL,
        "negatives_per_positive": _int(min=0, max=1000),
        "negative_weight": _float(min=0, min_open=True),
        "batch_size": _int(min=1),
        "epochs": _int(min=1),
        "patience": _int(min=1),
        "lr": {
            "schedule": _str(choices=SCHEDULES),
            "start_lr": _float(min=0, min_open=True),
            "min_lr": _float(min=0, min_open=True),
            "max_lr": _float(min=0, min_open=True),
            "rampup_epochs": _int(min=0),
            "sustain_epochs": _int(min=0),
            "exp_decay": _float(min=0, max=1, min_open=True),
        },
        "ranker": {
            "kind": _str(choices=("none", "ease"), help="none ranks by the network; ease adds the EASE ranking head"),
            "l2": Spec("floats", min=0, min_open=True, help="EASE's L2 values to choose from on valid"),
            "like_weight": Spec("floats", min=0, help="exponents of the like-rate factor to choose from"),
            "min_item_ratings": _int(min=1),
            "refit": BOOL,
            "tune_users": _int(optional=True, min=1),
        },
        "taste": {
            "kind": _str(choices=("none", "blend"),
                         help="none: similar anime / users by the rating embeddings; blend: animerec/taste.py"),
            "embedding_size": _int(min=1, max=4096),
            "dropout": _float(min=0, max=1, max_open=True),
            "temperature": _float(min=0, min_open=True),
            "learning_rate": _float(min=0, min_open=True),
            "batch_size": _int(min=1),
            "epochs": _int(min=1),
            "patience": _int(min=1),
            "shrink": _float(min=0),
            "ease_l2": Spec("floats", min=0, min_open=True, help="EASE L2 values for the ease part, chosen on valid"),
            "ease_keep": _int(min=1),
            "item_weights": {part: Spec("floats", min=0, help="blend weights to choose from on valid")
                             for part in TASTE_ITEM_PARTS},
            "user_weights": {part: Spec("floats", min=0, help="blend weights to choose from on valid")
                             for part in TASTE_USER_PARTS},
            "tune_users": _int(optional=True, min=1),
        },
        "pretrained": OPT_STR,
        "registry_name": OPT_STR,
        "best_metric": _str(choices=METRICS),
    },
    "train": {
        "strategy": _str(choices=STRATEGIES),
        "tpu_address": OPT_STR,
        "trainer": _str(choices=TRAINERS),
        "seed": _int(),
        "verbose": _int(min=0, max=2),
        "resume": BOOL,
    },
    "evaluate": {
        "k": _int(min=1, max=1000),
        "relevance_threshold": _float(**RATING),
        "max_users": _int(optional=True, min=1),
    },
    "recs": {
        "n": _int(min=1, max=10_000),
        "anime": OPT_STR,
        "anime_id": _int(optional=True, min=1),
        "random": BOOL,
        "seed": _int(),
        "user_id": _int(optional=True),
        "ratings_file": OPT_STR,
        "user_min_ratings": _int(min=1),
        "user_max_ratings": _int(min=1),
        "rating_user": _str(choices=("similar_users", "given", "random")),
        "favorite_fraction": _float(min=0, max=1, min_open=True),
        "favorite_min_rating": _float(**RATING),
        "genres": Spec("list"),
        "genre_match": _str(choices=("any", "all")),
        "types": Spec("list", items=TYPES),
        "min_score": _float(optional=True, min=0, max=10),
        "max_score": _float(optional=True, min=0, max=10),
        "min_predicted_rating": _float(optional=True, **RATING),
        "max_predicted_rating": _float(optional=True, **RATING),
        "sequels": _str(choices=SEQUEL_MODES, help="later entries of franchises: hide_unstarted, hide_all or show"),
        "adult": BOOL,
        "min_members": _int(optional=True, min=0),
        "popularity_damping": _float(min=0, max=2),
        "exclude": Spec("list", help="MAL IDs never to recommend (not interested)"),
        "dropped_as_dislikes": BOOL,
    },
}

# Pairs that must be ordered when both are set: (lower key, upper key).
ORDERED = (
    ("data.demo.min_ratings_per_user", "data.demo.max_ratings_per_user"),
    ("model.lr.min_lr", "model.lr.max_lr"),
    ("recs.user_min_ratings", "recs.user_max_ratings"),
    ("recs.min_score", "recs.max_score"),
    ("recs.min_predicted_rating", "recs.max_predicted_rating"),
)


def _check_steps(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value)):
        return value, None
    return value, "expected 'all', a list such as [download,preprocess] or a comma-separated string"


def _convert(spec: Spec, value: Any) -> tuple[Any, str | None]:
    """(converted value, problem or None)."""
    if value is None:
        return (None, None) if spec.optional else (None, f"required; expected {spec.allowed()}")
    kind = spec.type
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (value, f"expected {spec.allowed()}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"expected {spec.allowed()}"
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return value, f"expected {spec.allowed()}"
        value = float(value)
    elif kind == "str":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a title such as 86 or 5 Centimeters per Second
        if not isinstance(value, str):
            return value, f"expected {spec.allowed()}"
    elif kind == "floats":
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                             for v in values):
            return value, f"expected {spec.allowed()}"
        number = Spec("float", min=spec.min, max=spec.max, min_open=spec.min_open, max_open=spec.max_open)
        for v in values:
            _v, problem = _convert(number, v)
            if problem:
                return value, f"has {v:g}: {problem}"
        return [float(v) for v in values], None
    elif kind == "list":
        if isinstance(value, str):
            value = [value]  # recs.genres=Action means [Action]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
            return value, f"expected {spec.allowed()}"
        value = [str(v) for v in value]
        if spec.items:
            by_key = {item.lower(): item for item in spec.items}
            unknown = [v for v in value if v.lower() not in by_key]
            if unknown:
                return value, f"has {', '.join(map(repr, unknown))}; expected {spec.allowed()}"
            value = [by_key[v.lower()] for v in value]
        return value, None
    if spec.choices is not None and value not in spec.choices:
        return value, f"expected {spec.allowed()}"
    if kind in ("int", "float"):
        low_bad = spec.min is not None and (value <= spec.min if spec.min_open else value < spec.min)
        high_bad = spec.max is not None and (value >= spec.max if spec.max_open else value > spec.max)
        if low_bad or high_bad:
            return value, f"out of range; expected {spec.allowed()}"
    return value, None


def _walk(schema: Mapping[str, Any], cfg: Any, prefix: str, problems: list[str], partial: bool = False) -> Any:
    if not isinstance(cfg, Mapping):
        problems.append(f"{prefix.rstrip('.')}={cfg!r}: expected a section with keys {', '.join(schema)}")
        return cfg
    out = dict(cfg)
    unknown = sorted(set(cfg) - set(schema))
    for key in unknown:
        problems.append(f"{prefix}{key}: unknown key; {prefix.rstrip('.') or 'the config'} has {', '.join(schema)}")
    for key, spec in schema.items():
        name = f"{prefix}{key}"
        if key not in cfg:
            if not partial:
                problems.append(f"{name}: missing; add it to config.yaml")
            continue
        value = cfg[key]
        if isinstance(spec, dict):
            out[key] = _walk(spec, value, name + ".", problems, partial)
            continue
        if spec == "steps":
            out[key], problem = _check_steps(value)
        else:
            out[key], problem = _convert(spec, value)
        if problem:
            problems.append(f"{name}={_show(value)}: {problem}")
    return out


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def validate_config(cfg: Mapping[str, Any], sections: Sequence[str] | None = None, *, partial: bool = False) -> dict:
    """The configuration with its values converted; a ConfigError listing every problem otherwise.

    ``sections`` limits the check to those top-level sections (the rest pass through unchecked);
    ``partial`` lets keys be absent (checking only those present).
    """
    schema = SCHEMA if sections is None else {k: v for k, v in SCHEMA.items() if k in sections}
    problems: list[str] = []
    subset = cfg if sections is None else {k: cfg.get(k) for k in schema}
    checked = _walk(schema, subset, "", problems, partial)
    for low, high in ORDERED:
        if low.split(".")[0] not in schema:
            continue
        a, b = _get(checked, low), _get(checked, high)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > b:
            problems.append(f"{low}={a:g} is above {high}={b:g}: expected {low} <= {high}")
    data = checked.get("data") if isinstance(checked, Mapping) else None
    if isinstance(data, Mapping):
        fractions = [data.get(k) for k in ("test_fraction", "valid_fraction")]
        if all(isinstance(f, float) for f in fractions) and sum(fractions) >= 1:
            problems.append(f"data.test_fraction + data.valid_fraction = {sum(fractions):g} leaves nothing to "
                            f"train on; expected a sum below 1")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems) + ".")
    return {**dict(cfg), **checked} if sections is not None else checked


def check_source(data: Mapping[str, Any]) -> None:
    """What the download step needs from its ``data.source``, checked before anything is fetched."""
    needs = {"url": ("anime_url", "ratings_url"), "local": ("anime_path", "ratings_path")}.get(data["source"], ())
    missing = [f"data.{key}" for key in needs if not data.get(key)]
    if missing:
        what = "an http(s):// or file:// URL" if data["source"] == "url" else "a path to the file"
        raise ConfigError(f"data.source={data['source']} needs {' and '.join(missing)} ({what}).")


# Overrides through one string ----------------------------------------------------------------------------
_OPEN, _CLOSE = "[{(", "]})"


def _scan(text: str, on_char: Callable[[int, str, bool], None]) -> None:
    """Call ``on_char(i, ch, top)`` for each character; ``top`` is True outside quotes and brackets."""
    quote, depth, escaped = None, 0, False
    for i, ch in enumerate(text):
        top = quote is None and depth == 0
        on_char(i, ch, top)
        if escaped:
            escaped = False
        elif quote:
            if ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)


def split_overrides(text: str | None) -> list[str]:
    """Hydra overrides in one string -> a list, splitting on whitespace outside quotes and brackets."""
    pieces: list[str] = []
    current: list[str] = []

    def on_char(_i: int, ch: str, top: bool) -> None:
        if top and ch.isspace():
            if current:
                pieces.append("".join(current))
                current.clear()
        else:
            current.append(ch)

    _scan(text or "", on_char)
    if current:
        pieces.append("".join(current))
    return pieces


def quote_value(value: object) -> str:
    """A value as a Hydra double-quoted string: backslashes and quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_override(override: str) -> str:
    """An override whose value holds bare whitespace (``a=Cowboy Bebop``) with that value double-quoted."""
    bare = []
    _scan(override, lambda i, ch, top: bare.append(i) if top and ch.isspace() else None)
    if not bare or "=" not in override:
        return override
    key, value = override.split("=", 1)
    return f"{key}={quote_value(value.strip())}"


def join_overrides(overrides: Sequence[str]) -> str:
    """The inverse of :func:`split_overrides`, for a list of Hydra overrides."""
    return " ".join(quote_override(o) for o in overrides)

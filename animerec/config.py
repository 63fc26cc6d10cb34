"""The one typed schema of the pipeline configuration, and how overrides travel.

``config.yaml`` holds the values and their comments (the filters' defaults are :class:`ItemFilter`'s
fields); this module holds their types (frozen dataclasses, one per section: :class:`Config` down to
:class:`LRConfig`; a key's choices are its ``Literal`` type, read with ``typing.get_type_hints``) and
ranges (:func:`key`), once. :func:`validate_config` checks a composed configuration once per process
(``main.py``'s pipeline, every component, the tests' configs): wrong types, out-of-range values,
unknown choices, unknown and missing keys and the rules across keys all come back together as
one :class:`~animerec.errors.ConfigError` naming each key, the value given and what is allowed.
Values are converted where that is lossless (an int where a float is expected, one string where
a list is expected), and the steps receive the typed :class:`Config` (``cfg.model.lr.max_lr``).

:func:`split_overrides` / :func:`join_overrides` carry Hydra overrides through one string (the
``hydra_options`` parameter of ``mlflow run``, a component's ``--overrides``): whitespace inside
quotes or brackets stays, so ``recs.anime="Cowboy Bebop"`` and
``recs.genres=[Action,"Slice of Life"]`` arrive unchanged.
"""

from __future__ import annotations

import functools
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, make_dataclass, replace
from types import SimpleNamespace, UnionType
from typing import Any, Callable, Literal, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

from animerec.errors import ConfigError, RecommenderError
from animerec.steps import INPUTS

AnimeType = Literal["TV", "Movie", "OVA", "ONA", "Special", "Music"]
Initializer = Literal["he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal", "lecun_uniform",
                      "random_normal", "random_uniform", "truncated_normal", "orthogonal", "variance_scaling"]
Activation = Literal["sigmoid", "softplus"]  # linear, relu and tanh never cleared the rule (docs/results.md)
Loss = Literal["binary_crossentropy", "mean_squared_error", "mse", "mean_absolute_error", "mae", "huber"]
Schedule = Literal["rampup_decay", "cosine", "constant"]
TasteItemPart = Literal["cooc", "content"]  # model.taste.item_weights (animerec/taste/index.py)
WandbMode = Literal["online", "offline", "disabled"]
Strategy = Literal["auto", "tpu", "gpu", "cpu", "multi_worker"]  # train.strategy (animerec/strategy.py)
SequelMode = Literal["hide_unstarted", "hide_all", "show"]  # recs.sequels (animerec/franchise.py)
Metric = Literal["valid_ndcg_at_10", "valid_recall_at_10", "valid_rmse", "valid_mae"]  # model:best reads valid only
TYPES, ACTIVATIONS, TASTE_ITEM_PARTS, WANDB_MODES, SEQUEL_MODES = (
    get_args(t) for t in (AnimeType, Activation, TasteItemPart, WandbMode, SequelMode))
MAX_N = 10_000  # results in one answer: recs.n, and every query's n (CLI, page, served model)


@dataclass(frozen=True)
class Rule:
    """What a key allows beyond its type (the field's annotation: choices are ``Literal`` types)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min itself excluded
    max_open: bool = False
    help: str = ""


def key(*, default: Any = MISSING, default_factory: Any = MISSING, **rule: Any) -> Any:
    """A schema field with a :class:`Rule`: ``l2: float = key(min=0)``."""
    return field(default=default, default_factory=default_factory, metadata={"rule": Rule(**rule)})


RATING = dict(min=1, max=10)
GRID = dict(min=0, help="values the K-fold cross-validation chooses from")
Floats = list[float]  # one number or a list of them, kept as a list: a grid the cross-validation chooses from


# The schema: frozen dataclasses mirroring config.yaml, one per section. A step reads ``cfg.model.lr.max_lr``.
@dataclass(frozen=True)
class MainConfig:
    steps: str | list[str]  # 'all', [download,preprocess] or a comma-separated string (animerec/steps)
    artifact_root: str
    experiment_name: str
    verify_artifacts: bool
    mlflow_copy_max_mb: float | None = key(min=0)


@dataclass(frozen=True)
class WandbConfig:
    project: str
    entity: str | None
    mode: WandbMode | None
    group: str | None
    dir: str | None


@dataclass(frozen=True)
class DemoConfig:
    num_users: int = key(min=1)
    min_ratings_per_user: int = key(min=1)
    max_ratings_per_user: int = key(min=1)
    min_members: int = key(min=0)
    seed: int


@dataclass(frozen=True)
class DataConfig:
    source: Literal["demo", "url", "kaggle", "local"]
    demo: DemoConfig
    anime_url: str | None
    ratings_url: str | None
    anime_sha256: str | None
    ratings_sha256: str | None
    kaggle_dataset: str
    kaggle_anime_file: str
    kaggle_ratings_file: str
    anime_path: str | None
    ratings_path: str | None
    min_user_ratings: int = key(min=1)
    min_anime_ratings: int = key(min=1)
    drop_plan_to_watch: bool
    drop_unwatched: bool
    drop_half_watched: bool
    unknown_anime: Literal["error", "drop"]
    test_fraction: float = key(min=0, max=1, max_open=True)
    valid_fraction: float = key(min=0, max=1, max_open=True)
    split_seed: int
    chunk_rows: int = key(min=1000)


InputsConfig = make_dataclass(  # the exact versions to read, one key per artifact a step reads (animerec/steps)
    "InputsConfig", [(artifact, str | None) for artifact in INPUTS], frozen=True)


@dataclass(frozen=True)
class LRConfig:
    schedule: Schedule
    start_lr: float = key(min=0, min_open=True)
    min_lr: float = key(min=0, min_open=True)
    max_lr: float = key(min=0, min_open=True)
    rampup_epochs: int = key(min=0)
    sustain_epochs: int = key(min=0)
    exp_decay: float = key(min=0, max=1, min_open=True)


@dataclass(frozen=True)
class RankerConfig:
    kind: Literal["none", "ease"] = key(help="none ranks by the network; ease adds the EASE ranking head")
    l2: Floats = key(min=0, min_open=True, help="EASE's L2 values; the best by cross-validation is taken")
    like_weight: Floats = key(min=0, help="exponents of the like-rate factor; 0 unless another clears the rule")
    rating_weight: Floats = key(min=0, help="exponents g: each anime in a user's history weighs (rating / the "
                                "user's mean rating)^g; 0 (all 1) unless another clears the rule")
    tune_users: int | None = key(min=1, help="users the cross-validation folds score (a seeded sample; null = all)")
    tune_items: int | None = key(min=1, help="the cross-validation's EASE covers the most-rated anime only (null = all)")


@dataclass(frozen=True)
class TasteConfig:
    kind: Literal["none", "blend"] = key(
        help="none: similar anime / users by the rating embeddings; blend: animerec/taste/index.py")
    item_weights: dict[TasteItemPart, Floats] = key(**GRID)
    tune_users: int | None = key(min=1, help="users the cross-validation folds score (a seeded sample; null = all)")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    embedding_size: int = key(min=1, max=4096)
    kernel_initializer: Initializer
    l2: float = key(min=0)
    activation: Activation
    loss: Loss
    use_bias: bool
    negatives_per_positive: int = key(min=0, max=1000)
    batch_size: int = key(min=1)
    max_steps_per_epoch: int | None = key(min=1, help="the batch grows past batch_size so that an epoch takes at "
                                          "most this many steps (null = batch_size always)")
    epochs: int = key(min=1)
    max_train_ratings: int | None = key(min=1, help="epochs are capped so that they pass over at most this many "
                                        "ratings in all (null = model.epochs always)")
    patience: int = key(min=1)
    min_delta: float = key(min=0, max=1, max_open=True,
                           help="the share by which val_loss must fall to count as better (early stopping)")
    lr: LRConfig
    ranker: RankerConfig
    taste: TasteConfig
    pretrained: str | None
    registry_name: str | None
    best_metric: Metric


@dataclass(frozen=True)
class TrainConfig:
    strategy: Strategy
    tpu_address: str | None
    trainer: Literal["lazy", "keras"]
    seed: int
    verbose: int = key(min=0, max=2)
    resume: bool


@dataclass(frozen=True)
class EvaluateConfig:
    k: int = key(min=1, max=1000)
    relevance_threshold: float = key(**RATING)
    max_users: int | None = key(min=1)
    folds: int = key(min=2, max=20, help="K of the K-fold cross-validation that chooses the ranking head's and the "
                     "taste blends' settings over train + valid")


@dataclass(frozen=True)
class ItemFilter:
    """Which anime may be returned: the one declaration of the recommendation filters.

    Each field carries its rule and the product's default; the config's ``recs`` section (which extends
    this class), the service's query (``filters``), the CLI's flags and the page's form are all derived
    from these fields, and :meth:`animerec.recommenders.Catalogue.mask` applies them. ``ItemFilter()``
    hides adult anime and later entries of unstarted franchises, as the CLI and the page do; pass
    ``ItemFilter.everything()`` for none of that. Values are checked (and converted where lossless:
    ``"7"`` -> 7.0, ``"Action"`` -> ``["Action"]``) when the filter is made; a bad one raises
    :class:`~animerec.errors.RecommenderError` naming the field.
    """

    genres: list[str] = key(default_factory=list, help="keep anime with any of these genres (case and punctuation "
                            "ignored: scifi = Sci-Fi)")
    genre_match: Literal["any", "all"] = key(default="any", help="with several genres: any of them or all")
    types: list[AnimeType] = key(default_factory=list, help="keep these types")
    min_score: float | None = key(default=None, min=0, max=10, help="lowest MAL score to keep")
    max_score: float | None = key(default=None, min=0, max=10, help="highest MAL score to keep")
    sequels: SequelMode = key(default="hide_unstarted",
                       help="later entries of franchises: hide_unstarted (none of a franchise whose first entry "
                            "is not on the list), hide_all (nothing of a franchise on the list) or show")
    adult: bool = key(default=False, help="include adult anime (hidden by default, as on MAL)")
    min_members: int | None = key(default=None, min=0, help="only anime with at least this many MAL members")
    max_episodes: int | None = key(default=None, min=1, help="only anime with at most this many episodes")
    popularity_damping: float = key(default=0.0, min=0, max=2, help="hidden gems: rank by score / members^this "
                                    "(0 the plain ranking; 0.3-0.5 lifts less-watched anime)")

    def __post_init__(self) -> None:
        for name, spec in specs(ItemFilter).items():
            value, problem = _convert(spec, _loose(spec, getattr(self, name)))
            if problem:
                raise RecommenderError(_filter_problem(name, spec, getattr(self, name)))
            object.__setattr__(self, name, value)

    @classmethod
    def everything(cls, **only: Any) -> "ItemFilter":
        """The filter that keeps every anime (adult ones and unstarted sequels too), but for the fields ``only``."""
        return cls(**{"sequels": "show", "adult": True, **only})

    def of(self) -> "ItemFilter":
        """Just the filter's fields (of a ``recs`` config, which extends this class)."""
        return ItemFilter(**{f.name: getattr(self, f.name) for f in fields(ItemFilter)})

    def is_empty(self) -> bool:
        return self.of() == ItemFilter.everything()


def _loose(spec: "Spec", value: Any) -> Any:
    """What forms and tables send, made what the schema expects: numbers and booleans as text, numpy values."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, str) or spec.kind not in ("int", "float", "bool"):
        return value
    text = value.strip().lower()
    if spec.kind == "bool":
        return {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False,
                "0": False}.get(text, value)
    try:
        number = float(text)
    except ValueError:
        return value
    return int(number) if spec.kind == "int" and number.is_integer() else number


def _filter_problem(name: str, spec: "Spec", value: Any) -> str:
    if spec.items and isinstance(value, (list, tuple)):
        unknown = [v for v in value if str(v).lower() not in {i.lower() for i in spec.items}]
        if unknown:
            return f"Unknown {name.rstrip('s')} {unknown[0]!r}. {name.capitalize()}: {', '.join(spec.items)}."
    return f"{name} must be {replace(spec, rule=replace(spec.rule, help='')).allowed()}, got {value!r}."


@dataclass(frozen=True, kw_only=True)
class RecsConfig(ItemFilter):
    """The recommender steps' queries; the filters are :class:`ItemFilter`'s fields."""

    n: int = key(min=1, max=MAX_N)
    anime: str | None
    anime_id: int | None = key(min=1)
    random: bool
    seed: int
    user_id: int | None
    ratings_file: str | None
    mal_user: str | None = key(help="a MyAnimeList username: their public list (needs MAL_CLIENT_ID)")
    anilist_user: str | None = key(help="an AniList username: their public list")
    user_min_ratings: int = key(min=1)
    user_max_ratings: int = key(min=1)
    rating_user: Literal["similar_users", "given", "random"]
    favorite_fraction: float = key(min=0, max=1, min_open=True)
    favorite_min_rating: float = key(**RATING)
    min_predicted_rating: float | None = key(**RATING)
    max_predicted_rating: float | None = key(**RATING)
    exclude: list[str] = key(help="MAL IDs never to recommend (not interested)")


@dataclass(frozen=True)
class Config:
    """The whole pipeline configuration, checked and typed: what every step receives."""

    main: MainConfig
    wandb: WandbConfig
    data: DataConfig
    inputs: InputsConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    recs: RecsConfig

    def to_dict(self) -> dict:
        """Plain nested dicts (for logging, YAML and JSON)."""
        return asdict(self)


# Pairs that must be ordered when both are set: (lower key, upper key).
ORDERED = (
    ("data.demo.min_ratings_per_user", "data.demo.max_ratings_per_user"),
    ("model.lr.min_lr", "model.lr.max_lr"),
    ("recs.user_min_ratings", "recs.user_max_ratings"),
    ("recs.min_score", "recs.max_score"),
    ("recs.min_predicted_rating", "recs.max_predicted_rating"),
)


@dataclass(frozen=True)
class Spec:
    """One key as the validator sees it: its kind and choices (from its type) and its :class:`Rule`."""

    kind: str  # int, float, bool, str, list, floats, weights, steps
    optional: bool
    rule: Rule
    choices: tuple | None = None  # a Literal's values
    items: tuple | None = None  # allowed list items (case-insensitive); for weights, the allowed keys

    def allowed(self) -> str:
        rule = self.rule
        bounds = " and ".join(filter(None, [
            f"{'>' if rule.min_open else '>='} {rule.min:g}" if rule.min is not None else "",
            f"{'<' if rule.max_open else '<='} {rule.max:g}" if rule.max is not None else ""]))
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "steps":
            text = "'all', a list such as [download,preprocess] or a comma-separated string"
        elif self.kind == "floats":
            text = f"a number or a list of numbers such as [100,300]{' each ' + bounds if bounds else ''}"
        elif self.kind == "weights":
            text = f"a section with keys {', '.join(self.items)}, each a number or a list of numbers"
        elif self.kind == "list":
            text = "a list such as [A,B]" + (f" of {', '.join(self.items)}" if self.items else "")
        else:
            noun = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[self.kind]
            text = noun + (" " + bounds if bounds else "")
        if self.optional:
            text += ", or null"
        return text + (f" ({rule.help})" if rule.help else "")


def _spec(hint: Any, rule: Rule) -> Spec:
    """The :class:`Spec` of a field's type: ``int``, ``float | None``, ``Literal[...]``, ``list[AnimeType]``,
    ``Floats``, ``dict[TasteItemPart, Floats]`` or ``str | list[str]`` (main.steps)."""
    parts = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    optional = type(None) in parts
    parts = tuple(part for part in parts if part is not type(None))
    if len(parts) > 1:
        return Spec("steps", optional, rule)
    origin, args = get_origin(parts[0]), get_args(parts[0])
    if origin is Literal:
        return Spec("str", optional, rule, choices=args)
    if origin is list:
        if args[0] is float:
            return Spec("floats", optional, rule)
        return Spec("list", optional, rule, items=get_args(args[0]) or None)  # list[AnimeType]: its values
    if origin is dict:
        return Spec("weights", optional, rule, items=get_args(args[0]))
    return Spec(parts[0].__name__, optional, rule)


@functools.cache
def specs(section: type) -> dict[str, Spec | type]:
    """A section's keys: a nested section's class, or the :class:`Spec` its type and rule make."""
    hints = get_type_hints(section)
    return {f.name: hints[f.name] if is_dataclass(hints[f.name])
            else _spec(hints[f.name], f.metadata.get("rule", Rule())) for f in fields(section)}


def section_keys(parents: Sequence[str]) -> list[str] | None:
    """The keys of the section at ``parents`` (``["model", "lr"]``); None when there is no such section."""
    section: Any = Config
    for part in parents:
        section = specs(section).get(part) if isinstance(section, type) else None
    return list(specs(section)) if isinstance(section, type) else None


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _convert(spec: Spec, value: Any) -> tuple[Any, str | None]:
    """(converted value, problem or None)."""
    rule, kind = spec.rule, spec.kind
    if value is None:
        return (None, None) if spec.optional else (None, f"required; expected {spec.allowed()}")
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (value, f"expected {spec.allowed()}")
    if kind == "steps":
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))
        return (value, None) if ok else (value, f"expected {spec.allowed()}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"expected {spec.allowed()}"
    elif kind == "float":
        if not _number(value):
            return value, f"expected {spec.allowed()}"
        value = float(value)
    elif kind == "str":
        if _number(value):
            value = str(value)  # a title such as 86 or 5 Centimeters per Second
        if not isinstance(value, str):
            return value, f"expected {spec.allowed()}"
    elif kind == "floats":
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(_number(v) for v in values):
            return value, f"expected {spec.allowed()}"
        number = Spec("float", False, replace(rule, help=""))
        for v in values:
            if problem := _convert(number, v)[1]:
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
        low_bad = rule.min is not None and (value <= rule.min if rule.min_open else value < rule.min)
        high_bad = rule.max is not None and (value >= rule.max if rule.max_open else value > rule.max)
        if low_bad or high_bad:
            return value, f"out of range; expected {spec.allowed()}"
    return value, None


def _walk(section: type, cfg: Any, prefix: str, problems: list[str]) -> Any:
    """``cfg`` checked against ``section``: an instance of it; when a problem was found below it, a namespace
    of what could be read (the rules across keys still run on it, so every problem is reported at once)."""
    keys = specs(section)
    if not isinstance(cfg, Mapping):
        problems.append(f"{prefix.rstrip('.')}={cfg!r}: expected a section with keys {', '.join(keys)}")
        return None
    for name in sorted(set(cfg) - set(keys)):
        problems.append(f"{prefix}{name}: unknown key; {prefix.rstrip('.') or 'the config'} has {', '.join(keys)}")
    values, before = {}, len(problems)
    for name, spec in keys.items():
        where = f"{prefix}{name}"
        if name not in cfg:
            problems.append(f"{where}: missing; add it to config.yaml")
        elif isinstance(spec, type):
            values[name] = _walk(spec, cfg[name], where + ".", problems)
        elif spec.kind == "weights":  # a section whose keys are the rule's items, each a grid
            parts = make_dataclass(name, [(part, Floats, key(min=spec.rule.min, help=spec.rule.help))
                                          for part in spec.items])
            checked = _walk(parts, cfg[name], where + ".", problems)
            values[name] = asdict(checked) if is_dataclass(checked) else vars(checked) if checked else None
        else:
            values[name], problem = _convert(spec, cfg[name])
            if problem:
                problems.append(f"{where}={_show(cfg[name])}: {problem}")
    return section(**values) if len(problems) == before else SimpleNamespace(**values)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


def validate_config(cfg: Mapping[str, Any]) -> Config:
    """The configuration checked and typed; a ConfigError listing every problem otherwise."""
    if isinstance(cfg, Config):
        return cfg
    problems: list[str] = []
    checked = _walk(Config, cfg, "", problems)
    # the rules across keys, on the values that passed their own checks
    for low, high in ORDERED:
        a, b = _get(checked, low), _get(checked, high)
        if _number(a) and _number(b) and a > b:
            problems.append(f"{low}={a:g} is above {high}={b:g}: expected {low} <= {high}")
    weights = _get(checked, "model.taste.item_weights")
    grids = weights.values() if isinstance(weights, Mapping) else [[]]
    if (_get(checked, "model.taste.kind") == "blend" and all(grid and all(map(_number, grid)) for grid in grids)
            and not any(max(grid) > 0 for grid in grids)):
        problems.append(f"model.taste.item_weights={weights}: every weight is 0, so nothing would rank the similar "
                        f"anime; give at least one part a weight above 0 (e.g. model.taste.item_weights.cooc=[1.0])")
    fractions = _get(checked, "data.test_fraction"), _get(checked, "data.valid_fraction")
    if all(map(_number, fractions)) and sum(fractions) >= 1:
        problems.append(f"data.test_fraction + data.valid_fraction = {sum(fractions):g} leaves nothing to train on; "
                        f"expected a sum below 1")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems) + ".")
    return checked


def schema_defaults(section: type = Config) -> dict:
    """The keys whose default the schema itself declares (the filters: :class:`ItemFilter`'s fields), nested as
    in ``config.yaml``, which leaves them out: :mod:`animerec.pipeline` registers this in Hydra's ConfigStore
    and ``config.yaml`` composes on top of it, so a default is written once and every key can be overridden."""
    out: dict = {}
    keys = specs(section)
    for f in fields(section):
        kind = keys[f.name]
        if isinstance(kind, type):
            if inner := schema_defaults(kind):
                out[f.name] = inner
        elif f.default is not MISSING or f.default_factory is not MISSING:
            out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def check_source(data: DataConfig) -> None:
    """What the download step needs from its ``data.source``, checked before anything is fetched."""
    needs = {"url": ("anime_url", "ratings_url"), "local": ("anime_path", "ratings_path")}.get(data.source, ())
    missing = [f"data.{name}" for name in needs if not getattr(data, name)]
    if missing:
        what = "an http(s):// or file:// URL" if data.source == "url" else "a path to the file"
        raise ConfigError(f"data.source={data.source} needs {' and '.join(missing)} ({what}).")


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

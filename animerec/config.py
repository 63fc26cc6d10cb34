"""The one schema of the pipeline configuration: pydantic models, one per section, and how overrides travel.

``config.yaml`` holds the values and their comments (the filters' defaults are :class:`ItemFilter`'s
fields); this module holds their types, once: a section is a frozen pydantic model (:class:`Config`
down to :class:`LRConfig`), ranges are ``Field`` bounds, choices ``Literal`` types, unknown keys
forbidden. :func:`validate_config` checks a composed configuration once per process (``main.py``'s
pipeline, every component, the tests' configs): every problem, with the rules across keys, comes back
together as one :class:`~animerec.errors.ConfigError` naming each dotted key, the value given and
what is allowed. pydantic converts where that is lossless (an int where a float is expected, a
number where a title is); one value where a list is expected is a one-item list.
"""

from __future__ import annotations

import math
from types import UnionType
from typing import Annotated, Any, Callable, Literal, Mapping, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model, model_validator

from animerec.errors import ConfigError
from animerec.steps import INPUTS, STEPS

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


def _listed(value: Any) -> Any:
    """One value is a one-item list (``recs.genres=Action``); tuples and numpy arrays are lists."""
    value = value.tolist() if hasattr(value, "tolist") else value
    return list(value) if isinstance(value, tuple) else value if isinstance(value, list) else [value]


def _types(value: Any) -> list:
    """Anime types in any case (``tv``), spelled as the catalogue does (``TV``)."""
    spelled = {t.lower(): t for t in TYPES}
    return [spelled.get(v.lower(), v) if isinstance(v, str) else v for v in _listed(value)]


def Grid(help: str = "values the K-fold cross-validation chooses from", **bounds: float) -> Any:
    """One number or a list of them, kept as a list: a grid the cross-validation chooses from."""
    return Annotated[list[Annotated[float, Field(**bounds)]], BeforeValidator(_listed),
                     Field(min_length=1, description=help)]


Names = Annotated[list[str], BeforeValidator(_listed)]
Rating = Annotated[float, Field(ge=1, le=10)]


def _steps(value: Any) -> list[str]:
    """``"all"``, ``"download,preprocess"`` or a list -> the steps in pipeline order."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return list(STEPS)
    if not isinstance(value, (str, list)) or not all(isinstance(s, str) for s in _listed(value)):
        raise ValueError("expected 'all', a list such as [download,preprocess] or a comma-separated string")
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise ValueError((f"unknown step(s) {', '.join(unknown)}" if unknown else "no step named")
                         + f"; the steps are {', '.join(STEPS)}, or 'all'")
    return [s for s in STEPS if s in names]


class Section(BaseModel):
    """A configuration section: frozen, unknown keys refused, a number accepted where text is expected (a title
    such as 86), no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False)


# The schema: one model per section of config.yaml. A step reads ``cfg.model.lr.max_lr``.
class MainConfig(Section):
    steps: Annotated[list[str], BeforeValidator(_steps)]  # the steps to run, in pipeline order (animerec/steps)
    artifact_root: str
    experiment_name: str
    verify_artifacts: bool
    mlflow_copy_max_mb: float | None = Field(ge=0)


class WandbConfig(Section):
    project: str
    entity: str | None
    mode: WandbMode | None
    group: str | None
    dir: str | None


class DemoConfig(Section):
    num_users: int = Field(ge=1)
    min_ratings_per_user: int = Field(ge=1)
    max_ratings_per_user: int = Field(ge=1)
    min_members: int = Field(ge=0)
    seed: int


class DataConfig(Section):
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
    min_user_ratings: int = Field(ge=1)
    min_anime_ratings: int = Field(ge=1)
    drop_plan_to_watch: bool
    drop_unwatched: bool
    drop_half_watched: bool
    unknown_anime: Literal["error", "drop"]
    test_fraction: float = Field(ge=0, lt=1)
    valid_fraction: float = Field(ge=0, lt=1)
    split_seed: int
    chunk_rows: int = Field(ge=1000)


InputsConfig = create_model(  # the exact versions to read, one key per artifact a step reads (animerec/steps)
    "InputsConfig", __base__=Section, **{artifact: (str | None, ...) for artifact in INPUTS})


class LRConfig(Section):
    schedule: Schedule
    start_lr: float = Field(gt=0)
    min_lr: float = Field(gt=0)
    max_lr: float = Field(gt=0)
    rampup_epochs: int = Field(ge=0)
    sustain_epochs: int = Field(ge=0)
    exp_decay: float = Field(gt=0, le=1)


TUNE_USERS = "users the cross-validation folds score (a seeded sample; null = all)"


class RankerConfig(Section):
    kind: Literal["none", "ease"] = Field(description="none ranks by the network; ease adds the EASE ranking head")
    l2: Grid("EASE's L2 values; the best by cross-validation is taken", gt=0)
    like_weight: Grid("exponents of the like-rate factor; 0 unless another clears the rule", ge=0)
    rating_weight: Grid("exponents g: each anime in a user's history weighs (rating / the user's mean rating)^g; "
                        "0 (all 1) unless another clears the rule", ge=0)
    tune_users: int | None = Field(ge=1, description=TUNE_USERS)
    tune_items: int | None = Field(ge=1, description="the cross-validation's EASE covers the most-rated anime only "
                                                     "(null = all)")


class TasteConfig(Section):
    kind: Literal["none", "blend"] = Field(
        description="none: similar anime / users by the rating embeddings; blend: animerec/taste/index.py")
    item_weights: dict[TasteItemPart, Grid(ge=0)]
    tune_users: int | None = Field(ge=1, description=TUNE_USERS)


class ModelConfig(Section):
    name: str
    embedding_size: int = Field(ge=1, le=4096)
    kernel_initializer: Initializer
    l2: float = Field(ge=0)
    activation: Activation
    loss: Loss
    use_bias: bool
    negatives_per_positive: int = Field(ge=0, le=1000)
    batch_size: int = Field(ge=1)
    max_steps_per_epoch: int | None = Field(ge=1, description="the batch grows past batch_size so that an epoch "
                                            "takes at most this many steps (null = batch_size always)")
    epochs: int = Field(ge=1)
    max_train_ratings: int | None = Field(ge=1, description="epochs are capped so that they pass over at most "
                                          "this many ratings in all (null = model.epochs always)")
    patience: int = Field(ge=1)
    min_delta: float = Field(ge=0, lt=1, description="the share by which val_loss must fall to count as better "
                                                     "(early stopping)")
    lr: LRConfig
    ranker: RankerConfig
    taste: TasteConfig
    pretrained: str | None
    registry_name: str | None
    best_metric: Metric


class TrainConfig(Section):
    strategy: Strategy
    tpu_address: str | None
    trainer: Literal["lazy", "keras"]
    seed: int
    verbose: int = Field(ge=0, le=2)
    resume: bool


class EvaluateConfig(Section):
    k: int = Field(ge=1, le=1000)
    relevance_threshold: Rating
    max_users: int | None = Field(ge=1)
    folds: int = Field(ge=2, le=20, description="K of the K-fold cross-validation that chooses the ranking "
                       "head's and the taste blends' settings over train + valid")


class ItemFilter(Section):
    """Which anime may be returned: the one declaration of the recommendation filters.

    Each field carries its rule and the product's default; the config's ``recs`` section (which extends
    this class), the service's query (``filters``), the CLI's flags and the page's form are all derived
    from these fields, and :meth:`animerec.recommenders.Catalogue.mask` applies them. ``ItemFilter()``
    hides adult anime and later entries of unstarted franchises, as the CLI and the page do; pass
    ``ItemFilter.everything()`` for none of that. Values are checked (and converted where lossless:
    ``"7"`` -> 7.0, ``"Action"`` -> ``["Action"]``) when the filter is made (:func:`problems` words pydantic's
    errors: the field, the value and what it takes).
    """

    genres: Names = Field([], description="keep anime with any of these genres (case and punctuation ignored: "
                                          "scifi = Sci-Fi)")
    genre_match: Literal["any", "all"] = Field("any", description="with several genres: any of them or all")
    types: Annotated[list[AnimeType], BeforeValidator(_types)] = Field([], description="keep these types")
    min_score: float | None = Field(None, ge=0, le=10, description="lowest MAL score to keep")
    max_score: float | None = Field(None, ge=0, le=10, description="highest MAL score to keep")
    sequels: SequelMode = Field("hide_unstarted", description="later entries of franchises: hide_unstarted (none "
                                "of a franchise whose first entry is not on the list), hide_all (nothing of a "
                                "franchise on the list) or show")
    adult: bool = Field(False, description="include adult anime (hidden by default, as on MAL)")
    min_members: int | None = Field(None, ge=0, description="only anime with at least this many MAL members")
    max_episodes: int | None = Field(None, ge=1, description="only anime with at most this many episodes")
    popularity_damping: float = Field(0.0, ge=0, le=2, description="hidden gems: rank by score / members^this "
                                      "(0 the plain ranking; 0.3-0.5 lifts less-watched anime)")

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data: Any) -> Any:
        """numpy values (a served model's table) as plain Python."""
        return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in data.items()} if isinstance(
            data, Mapping) else data

    @classmethod
    def everything(cls, **only: Any) -> "ItemFilter":
        """The filter that keeps every anime (adult ones and unstarted sequels too), but for the fields ``only``."""
        return cls(**{"sequels": "show", "adult": True, **only})

    def of(self) -> "ItemFilter":
        """Just the filter's fields (of a ``recs`` config, which extends this class)."""
        return ItemFilter(**{name: getattr(self, name) for name in ItemFilter.model_fields})

    def is_empty(self) -> bool:
        return self.of() == ItemFilter.everything()


def filter_form(name: str) -> tuple[str, tuple | None]:
    """How a filter is asked for (the CLI's flag, the page's control): ``list``, ``bool``, ``int``, ``float`` or
    ``str``, and its choices."""
    hint = ItemFilter.model_fields[name].annotation
    if get_origin(hint) in (Union, UnionType):  # optional
        hint = next(part for part in get_args(hint) if part is not type(None))
    if get_origin(hint) is list:
        return "list", get_args(get_args(hint)[0]) or None
    if get_origin(hint) is Literal:
        return "str", get_args(hint)
    return hint.__name__, None


class RecsConfig(ItemFilter):
    """The recommender steps' queries; the filters are :class:`ItemFilter`'s fields."""

    n: int = Field(ge=1, le=MAX_N)
    anime: str | None
    anime_id: int | None = Field(ge=1)
    random: bool
    seed: int
    user_id: int | None
    ratings_file: str | None
    mal_user: str | None = Field(description="a MyAnimeList username: their public list (needs MAL_CLIENT_ID)")
    anilist_user: str | None = Field(description="an AniList username: their public list")
    user_min_ratings: int = Field(ge=1)
    user_max_ratings: int = Field(ge=1)
    rating_user: Literal["similar_users", "given", "random"]
    favorite_fraction: float = Field(gt=0, le=1)
    favorite_min_rating: Rating
    min_predicted_rating: Rating | None
    max_predicted_rating: Rating | None
    exclude: Names = Field(description="MAL IDs never to recommend (not interested)")


class Config(Section):
    """The whole pipeline configuration, checked and typed: what every step receives."""

    main: MainConfig
    wandb: WandbConfig
    data: DataConfig
    inputs: InputsConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    recs: RecsConfig


def problems(err: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """pydantic's errors, one line each: the dotted key, the value given, what is allowed (``model``: the one
    validated, :class:`Config` unless given)."""
    lines = []
    for error in err.errors(include_url=False):
        loc, where = error["loc"], ".".join(map(str, error["loc"]))
        if error["type"] == "missing":
            lines.append(f"{where}: missing; add it to config.yaml")
        elif error["type"] == "extra_forbidden":
            section = section_at(loc[:-1], model or Config)
            lines.append(f"{where}: unknown key" + (f"; {'.'.join(map(str, loc[:-1])) or 'it'} has "
                                                    f"{', '.join(section.model_fields)}" if section else ""))
        else:
            section = section_at(loc[:-1], model or Config)
            field = section.model_fields.get(loc[-1]) if section and loc and isinstance(loc[-1], str) else None
            message = error["ctx"]["error"] if error["type"] == "value_error" else error["msg"]
            lines.append(f"{where}={error['input']!r}: {message}"
                         + (f" ({field.description})" if field and field.description else ""))
    return lines


def section_at(loc: Sequence, model: type[BaseModel]) -> type[BaseModel] | None:
    """The model of the section at ``loc`` (``("model", "lr")``), None where there is none."""
    section: Any = model
    for part in loc:
        field = section.model_fields.get(part) if isinstance(section, type) else None
        section = field.annotation if field else None
    return section if isinstance(section, type) and issubclass(section, BaseModel) else None


# Pairs that must be ordered when both are set: (lower key, upper key).
ORDERED = (
    ("data.demo.min_ratings_per_user", "data.demo.max_ratings_per_user"),
    ("model.lr.min_lr", "model.lr.max_lr"),
    ("recs.user_min_ratings", "recs.user_max_ratings"),
    ("recs.min_score", "recs.max_score"),
    ("recs.min_predicted_rating", "recs.max_predicted_rating"),
)


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _across(given: Callable[[str], Any]) -> list[str]:
    """The rules across keys, on the values that passed their own checks (``given(key)``: None otherwise)."""
    out = []
    for low, high in ORDERED:
        a, b = given(low), given(high)
        if _number(a) and _number(b) and a > b:
            out.append(f"{low}={a:g} is above {high}={b:g}: expected {low} <= {high}")
    weights = given("model.taste.item_weights")
    grids = [_listed(grid) for grid in weights.values()] if isinstance(weights, Mapping) else [[]]
    if (given("model.taste.kind") == "blend" and all(grid and all(map(_number, grid)) for grid in grids)
            and not any(max(grid) > 0 for grid in grids)):
        out.append(f"model.taste.item_weights={weights}: every weight is 0, so nothing would rank the similar "
                   f"anime; give at least one part a weight above 0 (e.g. model.taste.item_weights.cooc=[1.0])")
    fractions = given("data.test_fraction"), given("data.valid_fraction")
    if all(map(_number, fractions)) and sum(fractions) >= 1:
        out.append(f"data.test_fraction + data.valid_fraction = {sum(fractions):g} leaves nothing to train on; "
                   f"expected a sum below 1")
    return out


def validate_config(cfg: Mapping[str, Any]) -> Config:
    """The configuration checked and typed; a ConfigError listing every problem otherwise."""
    if isinstance(cfg, Config):
        return cfg
    try:
        checked, errors, found = Config.model_validate(cfg), [], []
    except ValidationError as err:
        checked, errors, found = None, err.errors(), problems(err)
    bad = {".".join(map(str, error["loc"][:depth])) for error in errors for depth in range(1, len(error["loc"]) + 1)}

    def given(dotted: str) -> Any:
        value: Any = cfg
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return None if dotted in bad else value

    found += _across(given)
    if found:
        raise ConfigError("invalid configuration: " + "; ".join(found) + ".")
    return checked


def check_source(data: DataConfig) -> None:
    """What the download step needs from its ``data.source``, checked before anything is fetched."""
    needs = {"url": ("anime_url", "ratings_url"), "local": ("anime_path", "ratings_path")}.get(data.source, ())
    missing = [f"data.{name}" for name in needs if not getattr(data, name)]
    if missing:
        what = "an http(s):// or file:// URL" if data.source == "url" else "a path to the file"
        raise ConfigError(f"data.source={data.source} needs {' and '.join(missing)} ({what}).")

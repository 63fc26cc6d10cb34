"""The typed schema and how overrides travel through one string."""

import json

import pytest

from animerec.config import Config, LRConfig, validate_config
from animerec.errors import ConfigError
from animerec.launch import split_overrides
from animerec.pipeline import compose_config
from tests.conftest import PROJECT_ROOT


def test_defaults_and_presets_pass_the_schema():
    for preset in ("seed", "best"):
        cfg = compose_config([f"model={preset}"], PROJECT_ROOT)
        assert cfg.model.name == preset and isinstance(cfg.model.l2, float)


def test_lossless_conversions():
    cfg = compose_config(["recs.genres=Action", "recs.types=[tv,movie]", "evaluate.relevance_threshold=8",
                          "recs.anime=86"], PROJECT_ROOT)
    assert cfg.recs.genres == ["Action"]  # one string is a one-item list, not the letters of a genre
    assert cfg.recs.types == ["TV", "Movie"]  # canonical spelling
    assert cfg.evaluate.relevance_threshold == 8.0 and isinstance(cfg.evaluate.relevance_threshold, float)
    assert cfg.recs.anime == "86"  # a title that looks like a number stays a title


def test_every_problem_is_reported_at_once():
    cfg = compose_config([], PROJECT_ROOT, validate=False)
    cfg["data"]["min_user_ratings"] = 2.5
    cfg["model"]["lr"]["exp_decay"] = 0
    cfg["train"]["extra"] = 1
    del cfg["recs"]["n"]
    with pytest.raises(ConfigError) as raised:
        validate_config(cfg)
    message = str(raised.value)
    for part in ("data.min_user_ratings=2.5: Input should be a valid integer", "model.lr.exp_decay=0: Input should be "
                 "greater than 0", "train.extra: unknown key; train has strategy, tpu_address", "recs.n: missing"):
        assert part in message, message


def test_steps_receive_a_typed_frozen_config():
    from pydantic import ValidationError

    cfg = compose_config(["model=best"], PROJECT_ROOT)
    assert isinstance(cfg, Config) and isinstance(cfg.model.lr, LRConfig)
    assert cfg.model.ranker.l2[:3] == [25.0, 50.0, 100.0] and cfg.model.taste.item_weights["cooc"] == [1.0]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.model.epochs = 3  # read once, never changed behind a step's back
    assert validate_config(cfg) is cfg  # a checked config is not checked again
    assert cfg.model_dump()["model"]["lr"]["schedule"] == "cosine"


@pytest.mark.parametrize("text, expected", [
    ('recs.anime="Cowboy Bebop" recs.n=5', ['recs.anime="Cowboy Bebop"', "recs.n=5"]),
    ("recs.genres=[Action,\"Slice of Life\"]  model=best", ['recs.genres=[Action,"Slice of Life"]', "model=best"]),
    ("recs.anime='Steins;Gate'", ["recs.anime='Steins;Gate'"]),
    ('recs.anime="say \\"hi\\" twice"', ['recs.anime="say \\"hi\\" twice"']),
    ("", []),
])
def test_split_overrides_keeps_quoted_and_bracketed_spaces(text, expected):
    assert split_overrides(text) == expected


def test_a_steps_overrides_travel_as_json_exactly():
    """What the pipeline hands a step's process (a JSON list) comes back as the same overrides."""
    overrides = ["recs.anime=Cowboy Bebop", 'recs.genres=[Action,"Slice of Life"]', 'recs.anime="A \\"B\\" C"', "n=3"]
    assert split_overrides(json.dumps(overrides)) == overrides
    assert split_overrides("[not json") == ["[not json"]  # left to Hydra, which says what is wrong


@pytest.mark.parametrize("override, message", [
    ("train.strategy=quantum", "train.strategy='quantum': Input should be 'auto', 'tpu', 'gpu', 'cpu' or 'multi_worker'"),
    ("train.trainer=adamw", "train.trainer='adamw': Input should be 'lazy' or 'keras'"),
    ("wandb.mode=sometimes", "wandb.mode='sometimes': Input should be 'online', 'offline' or 'disabled'"),
    ("data.test_fraction=0.95", "data.test_fraction \\+ data.valid_fraction = 1.05 leaves nothing to train on"),
    ("data.demo.min_ratings_per_user=300", "data.demo.min_ratings_per_user=300 is above data.demo.max_ratings_per_user"),
])
def test_rules_the_schema_alone_enforces(override, message):
    """The library no longer restates these rules: the schema's message is the only one, checked once."""
    with pytest.raises(ConfigError, match=message):
        compose_config([override], PROJECT_ROOT)


@pytest.mark.parametrize("override, message", [
    ("main.steps=5", "main.steps=5: expected 'all', a list such as [download,preprocess] or a comma-separated string"),
    ("main.steps=[train,fit]", "main.steps=['train', 'fit']: unknown step(s) fit; the steps are download, preprocess"),
    ("model.ranker.l2=[100,-1]", "model.ranker.l2.1=-1: Input should be greater than 0"),
    ("model.ranker.l2=[]", "model.ranker.l2=[]: Value should have at least 1 item after validation, not 0 (EASE's L2"),
    ("model.taste.item_weights=3", "model.taste.item_weights=3: Input should be a valid dictionary"),
    ("+model.taste.item_weights.tfidf=1", "model.taste.item_weights.tfidf.[key]='tfidf': Input should be 'cooc' or "
                                         "'content'"),
    ("model.taste.item_weights.cooc=[x]", "model.taste.item_weights.cooc.0='x': Input should be a valid number"),
    ("model.lr=3", "model.lr=3: Input should be a valid dictionary or instance of LRConfig"),
    ("recs.types=[TV,{a:1}]", "recs.types.1={'a': 1}: Input should be 'TV', 'Movie', 'OVA', 'ONA', 'Special' or 'Music'"),
    ("recs.adult=maybe", "recs.adult='maybe': Input should be a valid boolean, unable to interpret input (include "
                         "adult anime"),
])
def test_each_kind_of_key_says_what_it_takes(override, message):
    with pytest.raises(ConfigError) as raised:
        compose_config([override], PROJECT_ROOT)
    assert message in str(raised.value)


def test_rules_across_keys_are_reported_with_the_other_problems():
    with pytest.raises(ConfigError) as raised:
        compose_config(["recs.n=abc", "recs.min_score=9", "recs.max_score=3", "data.test_fraction=0.95"], PROJECT_ROOT)
    message = str(raised.value)
    for part in ("recs.n='abc': Input should be a valid integer", "recs.min_score=9 is above recs.max_score=3",
                 "data.test_fraction + data.valid_fraction = 1.05"):
        assert part in message, message
    with pytest.raises(ConfigError) as raised:  # a bad value is not compared: only its own problem is reported
        compose_config(["recs.min_score=x", "recs.max_score=3"], PROJECT_ROOT)
    assert "recs.min_score='x': Input should be a valid number" in str(raised.value) and "is above" not in str(raised.value)


def test_the_filters_are_declared_once():
    """ItemFilter's fields are the filters everywhere: the composed config's values are its defaults (config.yaml
    does not repeat them), the recs config extends it, the service's query, the CLI's flags and the page's form
    are made from its fields."""

    from animerec.cli import build_parser
    from animerec.config import ItemFilter
    from animerec.service import FILTER_FIELDS, Query
    from animerec.web import query_from

    defaults = ItemFilter().model_dump()
    recs = compose_config([], PROJECT_ROOT).recs
    assert {name: getattr(recs, name) for name in FILTER_FIELDS} == defaults and recs.of() == ItemFilter()
    args = vars(build_parser().parse_args(["recommend", "1"]))
    assert {name: args[name] for name in FILTER_FIELDS} == defaults
    assert Query.from_mapping({"kind": "rating_recs", "query": 1}).filters == ItemFilter()

    class Form(dict):
        def getlist(self, name):
            return self.get(name, [])

    assert Query.from_mapping({**query_from(Form(), "rating_recs"), "query": 1}).filters == ItemFilter()
    asked = Query.from_mapping({**query_from(Form(types=["tv"], min_score="7", adult="on"), "rating_recs"), "query": 1})
    assert asked.filters == ItemFilter(types=["TV"], min_score=7.0, adult=True)
    with pytest.raises(ConfigError, match="recs.sequels='never'"):
        compose_config(["recs.sequels=never"], PROJECT_ROOT)


def test_the_favourite_rule_is_the_same_in_the_pipeline_the_cli_and_the_service():
    """config.yaml's recs.favorite_* (the pipeline's steps) and the CLI's flags give FavoriteRule's defaults (what
    the page and the served model use), so a change to one that forgets the others fails here."""
    from animerec.cli import build_parser
    from animerec.recommenders import FavoriteRule

    recs = compose_config([], PROJECT_ROOT).recs
    assert FavoriteRule.from_config(recs) == FavoriteRule()
    args = build_parser().parse_args(["similar-users", "1"])
    assert FavoriteRule(args.favorite_fraction, args.favorite_min_rating) == FavoriteRule()


def test_a_query_takes_the_filters_flat_or_nested_once():
    from animerec.config import ItemFilter
    from animerec.errors import RecommenderError
    from animerec.service import Query

    asked = Query.from_mapping({"kind": "rating_recs", "query": 1, "filters": {"types": ["movie"], "min_score": "8"}})
    assert asked.filters == ItemFilter(types=["Movie"], min_score=8.0)
    for filters, message in [({"types": ["TV"], "filters": {"adult": True}}, r"flat or as 'filters', not both \(types\)"),
                             ({"filters": {"colour": "red"}}, r"Unknown filter\(s\) colour; the filters are genres"),
                             ({"filters": {"min_score": 11}}, r"min_score=11: Input should be less than or equal "
                                                              r"to 10 \(lowest MAL score to keep\)")]:
        with pytest.raises(RecommenderError, match=message):
            Query.from_mapping({"kind": "rating_recs", "query": 1, **filters})


def test_main_pys_flags(capsys):
    """``--steps`` / ``--overrides`` (mlflow run's parameters, with or without ``=``) become Hydra overrides; the rest
    (Hydra's own flags among them) are left to Hydra."""
    from animerec.launch import prepare_argv

    assert prepare_argv(["--steps=train", "--overrides", 'recs.anime="Cowboy Bebop" recs.n=5', "x=1"]) == [
        "main.steps='train'", 'recs.anime="Cowboy Bebop"', "recs.n=5", "x=1"]
    with pytest.raises(SystemExit) as stopped:
        prepare_argv(["x=1", "--overrides"])
    assert stopped.value.code == 2 and "error: argument --overrides: expected one argument" in capsys.readouterr().err
    assert prepare_argv(["-m", "model=seed,best", "--cfg", "job"]) == ["-m", "model=seed,best", "--cfg", "job"]

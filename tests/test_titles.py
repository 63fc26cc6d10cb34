"""Title search on the real 2020 MAL catalogue: what people type -> the MAL ID they mean."""

import pytest

from animerec.data import demo
from animerec.data.layouts import load_anime
from animerec.titles import TitleError, TitleIndex, normalise


@pytest.fixture(scope="module")
def index():
    return TitleIndex(load_anime(demo.catalogue_path()))  # all 17,562 anime of 2020


@pytest.mark.parametrize("query, mal_id", [
    ("steins gate", 9253),  # Steins;Gate: punctuation and spacing ignored
    ("STEINS;GATE", 9253),
    ("fullmetal alchemist brotherhood", 5114),  # Fullmetal Alchemist: Brotherhood
    ("86", 41457),  # the anime titled 86, not MAL ID 86
    ("cowboy bebop", 1),  # the series, not one of its movies
    ("Cowboy Bebopp", 1),  # one typo, clearly closest
    ("kimi no na wa", 32281),  # Kimi no Na wa.
    ("Shingeki no Kyojin", 16498),
    ("naruto", 20),
    ("Naruto Shippuden", 1735),  # MAL spells it Shippuuden: close, and well ahead of the rest
    ("sen to chihiro no kamikakushi", 199),
])
def test_what_people_type_finds_the_anime(index, query, mal_id):
    assert index.find(query) == mal_id


@pytest.mark.parametrize("query, first_suggestion", [
    ("Naruto 2", None),  # not silently Naruto: the 2 is not in its title
    ("Cowboy Bebopp zzz", "Cowboy Bebop (MAL 1)"),  # suggestions: closest first, the series before its movies
    ("1", None),  # a number that is no title: the message points to --id
])
def test_unclear_queries_fail_with_ordered_suggestions(index, query, first_suggestion):
    with pytest.raises(TitleError, match=rf"No anime titled '{query}' in the catalogue stands out. Closest: ") as raised:
        index.find(query)
    message = str(raised.value)
    if first_suggestion:
        assert message.split("Closest: ")[1].startswith(first_suggestion), message
    if query.isdigit():
        assert f"recs.anime_id={query} (CLI: --id {query})" in message


def test_english_and_japanese_names_are_searched():
    import pandas as pd

    anime = pd.DataFrame({"anime_id": [16498, 9253], "name": ["Shingeki no Kyojin", "Steins;Gate"],
                          "english_name": ["Attack on Titan", None], "japanese_name": ["進撃の巨人", "シュタインズ・ゲート"],
                          "members": [2_500_000, 1_700_000]})
    index = TitleIndex(anime)
    assert index.find("attack on titan") == 16498
    assert index.find("シュタインズ・ゲート") == 9253
    assert normalise("Café Ōkami") == normalise("cafe okami")

"""Franchises from real titles of the 2020 catalogue (animerec/franchise.py), and what recs.sequels hides."""

import numpy as np
import pytest

from animerec.data import demo
from animerec.data.layouts import load_anime
from animerec.errors import RecommenderError
from animerec.franchise import franchise_ids, hidden_by_sequels, stem


@pytest.fixture(scope="module")
def catalogue():
    anime = load_anime(demo.catalogue_path())  # all 17,562 anime of 2020
    return anime.set_index("name")["anime_id"], franchise_ids(anime)


# (title, the title of its franchise's first entry)
SAME_FRANCHISE = [
    ("Shingeki no Kyojin Season 2", "Shingeki no Kyojin"),
    ("Shingeki no Kyojin Season 3 Part 2", "Shingeki no Kyojin"),
    ("Shingeki no Kyojin Movie 1: Guren no Yumiya", "Shingeki no Kyojin"),
    ("Shingeki no Kyojin: Ano Hi Kara", "Shingeki no Kyojin"),
    ("Gintama'", "Gintama"),
    ("Gintama°", "Gintama"),
    ("Gintama.", "Gintama"),
    ("Gintama Movie 2: Kanketsu-hen - Yorozuya yo Eien Nare", "Gintama"),
    ("Nisemonogatari", "Bakemonogatari"),
    ("Owarimonogatari", "Bakemonogatari"),
    ("Monogatari Series: Second Season", "Bakemonogatari"),
    ("Kizumonogatari I: Tekketsu-hen", "Bakemonogatari"),
    ("Fate/Zero", "Fate/stay night"),
    ("Fate/Zero 2nd Season", "Fate/stay night"),
    ("Fate/stay night: Unlimited Blade Works", "Fate/stay night"),
    ("K-On!!", "K-On!"),
    ("K-On! Movie", "K-On!"),
    ("Haikyuu!! Second Season", "Haikyuu!!"),
    ("Haikyuu!!: Karasuno Koukou vs. Shiratorizawa Gakuen Koukou", "Haikyuu!!"),
    ("Haikyuu!!: To the Top", "Haikyuu!!"),
    ("Steins;Gate 0", "Steins;Gate"),
    ("Overlord III", "Overlord"),
    ("Mob Psycho 100 II", "Mob Psycho 100"),
    ("Sword Art Online II", "Sword Art Online"),
    ("Re:Zero kara Hajimeru Isekai Seikatsu 2nd Season", "Re:Zero kara Hajimeru Isekai Seikatsu"),
    ("Code Geass: Hangyaku no Lelouch R2", "Code Geass: Hangyaku no Lelouch"),
    ("Clannad: After Story", "Clannad"),
    ("Clannad Movie", "Clannad"),  # a film made before the series: the series is where people start
    ("Tokyo Ghoul:re", "Tokyo Ghoul"),
    ("Naruto: Shippuuden", "Naruto"),
    ("Fullmetal Alchemist: Brotherhood", "Fullmetal Alchemist"),
    ("Kimetsu no Yaiba Movie: Mugen Ressha-hen", "Kimetsu no Yaiba"),
]

# false friends: titles alike that are different stories
DIFFERENT = [
    ("One Piece", "One Punch Man"),
    ("Bakemonogatari", "Kaguya-hime no Monogatari"),
    ("Bakemonogatari", "Saiunkoku Monogatari"),
    ("Black Lagoon", "Black Clover"),
    ("Monster", "Monster Musume no Iru Nichijou"),
    ("Tokyo Ghoul", "Tokyo Magnitude 8.0"),
    ("Sword Art Online", "Sword Gai The Animation"),
    ("Re:Zero kara Hajimeru Isekai Seikatsu", "Re:Creators"),
    ("Haikyuu!!", "Kuroko no Basket"),
    ("Shingeki no Kyojin", "Shingeki no Bahamut: Genesis"),
    ("Steins;Gate", "ChäoS;HEAd"),
    ("Steins;Gate", "Robotics;Notes"),
    ("Fate/stay night", "Fatal Fury: The Motion Picture"),
]


@pytest.mark.parametrize("title, first", SAME_FRANCHISE)
def test_seasons_films_and_extras_join_their_first_entry(catalogue, title, first):
    ids, franchise = catalogue
    assert franchise[ids[title]] == ids[first], (title, stem(title))


@pytest.mark.parametrize("a, b", DIFFERENT)
def test_false_friends_stay_apart(catalogue, a, b):
    ids, franchise = catalogue
    assert franchise[ids[a]] != franchise[ids[b]], (a, stem(a), b, stem(b))


def test_stems_by_hand():
    assert stem("Gintama°: Umai-mono wa Atomawashi ni Suru to Yokodorisareru") == "gintama"
    assert stem("Shingeki no Kyojin Season 2 Movie: Kakusei no Houkou") == "shingeki no kyojin"
    assert stem("86") == "86"  # a title that is a number stays itself
    assert stem("Kaguya-hime no Monogatari") == "kaguya hime no monogatari"


def test_what_each_sequels_mode_hides():
    # anime 0-2: franchise 10 (0 first); 3-4: franchise 20 (3 first); 5: franchise 30 alone
    franchise = np.array([10, 10, 10, 20, 20, 30])
    first = np.array([True, False, False, True, False, True])
    rated = np.array([1, 3])  # a later entry of franchise 10 (its first unrated), the first entry of 20
    assert list(np.flatnonzero(hidden_by_sequels(franchise, first, rated, "hide_unstarted"))) == [1, 2]
    assert list(np.flatnonzero(hidden_by_sequels(franchise, first, rated, "hide_all"))) == [0, 1, 2, 3, 4]
    assert not hidden_by_sequels(franchise, first, rated, "show").any()
    assert list(np.flatnonzero(hidden_by_sequels(franchise, first, np.array([], np.int64), "hide_unstarted"))) == [1, 2, 4]
    with pytest.raises(RecommenderError, match="sequels must be one of hide_unstarted, hide_all, show"):
        hidden_by_sequels(franchise, first, rated, "hide")

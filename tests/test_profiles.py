"""Reading anyone's list: ratings CSVs and MyAnimeList XML exports, including hostile and broken files."""

import gzip

import numpy as np
import pytest

import animerec.profiles as profiles
from animerec.profiles import LIKE_RATING, ListError, from_records, from_titles, read_list


def mal_export(entries, root="myanimelist", kind="anime") -> str:
    body = "".join(
        f"""
  <{kind}>
    <series_animedb_id>{anime_id}</series_animedb_id>
    <series_title><![CDATA[Title {anime_id}]]></series_title>
    <series_type>TV</series_type>
    <series_episodes>12</series_episodes>
    <my_id>0</my_id>
    <my_watched_episodes>{episodes}</my_watched_episodes>
    <my_start_date>0000-00-00</my_start_date>
    <my_finish_date>0000-00-00</my_finish_date>
    <my_score>{score}</my_score>
    <my_status>{status}</my_status>
    <update_on_import>0</update_on_import>
  </{kind}>""" for anime_id, score, status, episodes in entries)
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<!--
 Created by XML Export feature at MyAnimeList.net
 Version 1.1.0
-->
<{root}>
  <myinfo>
    <user_id>123</user_id>
    <user_name>someone</user_name>
    <user_export_type>1</user_export_type>
    <user_total_anime>{len(entries)}</user_total_anime>
  </myinfo>{body}
</{root}>
"""


ENTRIES = [(1, 9, "Completed", 26), (5, 0, "Watching", 3), (30, 7, "Dropped", 2), (199, 0, "Plan to Watch", 0),
           (20, 10, "On-Hold", 5)]


def test_mal_export_scores_statuses_and_plan_to_watch(tmp_path):
    path = tmp_path / "animelist.xml"
    path.write_text(mal_export(ENTRIES), encoding="utf-8")
    listed = read_list(path)
    assert listed.anime_ids.tolist() == [1, 5, 30, 199, 20]
    np.testing.assert_array_equal(listed.ratings, [9, np.nan, 7, np.nan, 10])
    assert listed.planned.tolist() == [False, False, False, True, False]
    assert str(path) in listed.source


def test_gzipped_export_and_numeric_statuses(tmp_path):
    path = tmp_path / "animelist_1700000000_-_123.xml.gz"
    path.write_bytes(gzip.compress(mal_export([(1, 8, "2", 26), (6, 0, "6", 0)]).encode()))
    listed = read_list(path)
    assert listed.anime_ids.tolist() == [1, 6] and listed.planned.tolist() == [False, True]


def test_csv_ratings_zero_and_empty_mean_unrated_and_the_last_duplicate_wins(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("anime_id,rating,comment\n1,9,great\n5,0,\n30,,x\n1,7,changed my mind\n\n", encoding="utf-8")
    listed = read_list(path)
    assert listed.anime_ids.tolist() == [5, 30, 1]
    np.testing.assert_array_equal(listed.ratings, [np.nan, np.nan, 7])


def test_a_list_of_ten_thousand_entries(tmp_path):
    rows = "\n".join(f"{i},{1 + i % 10}" for i in range(1, 10_001))
    (tmp_path / "big.csv").write_text("anime_id,rating\n" + rows + "\n")
    assert len(read_list(tmp_path / "big.csv")) == 10_000
    xml = mal_export([(i, 1 + i % 10, "Completed", 1) for i in range(1, 10_001)])
    (tmp_path / "big.xml").write_text(xml)
    assert len(read_list(tmp_path / "big.xml")) == 10_000


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<myanimelist><anime><series_animedb_id>1</series_animedb_id><my_score>&lol2;</my_score></anime></myanimelist>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<myanimelist><anime><series_animedb_id>1</series_animedb_id><my_score>&xxe;</my_score></anime></myanimelist>
"""


@pytest.mark.parametrize("name, content, message", [
    ("bomb.xml", BOMB, r"bomb.xml is refused: it declares a DTD or entities"),
    ("xxe.xml", EXTERNAL, r"xxe.xml is refused: it declares a DTD or entities"),
    ("cut.xml", mal_export(ENTRIES)[:-200], r"cut.xml is not well-formed XML .*line \d+.*is it truncated"),
    ("feed.xml", "<rss><channel/></rss>", r"feed.xml is XML but not a MyAnimeList export: its root element is <rss>"),
    ("manga.xml", mal_export([(1, 9, "Completed", 1)], kind="manga"), r"manga.xml is a MyAnimeList manga list"),
    ("none.xml", mal_export([]), r"none.xml is a MyAnimeList export with no <anime> entries"),
    ("status.xml", mal_export([(1, 9, "Finished", 1)]), r"status.xml, <anime> entry 1: unknown <my_status> 'Finished'"),
    ("score.xml", mal_export([(1, 11, "Completed", 1)]), r"score.xml, <anime> entry 1: rating '11' is outside 1-10"),
    ("id.xml", mal_export([("abc", 9, "Completed", 1)]), r"id.xml, <anime> entry 1: anime_id 'abc' is not a MAL ID"),
    ("header.csv", "id,score\n1,9\n", r"header.csv has no anime_id column \(its header: id, score\)"),
    ("rating.csv", "anime_id,rating\n1,9\n2,great\n", r"rating.csv, line 3: rating 'great' is not a number"),
    ("range.csv", "anime_id,rating\n1,-3\n", r"range.csv, line 2: rating '-3' is outside 1-10"),
    ("ids.csv", "anime_id,rating\n1.5,9\n", r"ids.csv, line 2: anime_id '1.5' is not a MAL ID"),
    ("noid.csv", "anime_id,rating\n1,9\n\n,8\n", r"noid.csv, line 4: anime_id is empty"),
    ("long.csv", "anime_id,rating\n1,9\n2," + "9" * 200_000 + "\n", r"long.csv, line 3: malformed CSV \(field larger"),
    ("noid.xml", mal_export([(1, 9, "Completed", 1)]).replace("<series_animedb_id>1</series_animedb_id>", ""),
     r"noid.xml, <anime> entry 1 has no <series_animedb_id>"),
    ("empty.csv", "", r"empty.csv is empty"),
    ("only_header.csv", "anime_id,rating\n", r"only_header.csv lists no anime"),
    ("binary.csv", b"\x00\xff\xfe\x81garbage", r"binary.csv is neither a UTF-8 CSV nor a MAL XML export"),
    ("broken.xml.gz", b"\x1f\x8b\x08\x00garbage", r"broken.xml.gz cannot be read: .*complete .gz"),
])
def test_bad_files_get_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ListError, match=message):
        read_list(path)


def test_size_limit_applies_after_unpacking(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "MAX_BYTES", 5000)
    path = tmp_path / "huge.xml.gz"
    path.write_bytes(gzip.compress(mal_export([(1, 9, "Completed", 1)] * 500).encode()))
    assert path.stat().st_size < 5000  # small on disk, large unpacked
    with pytest.raises(ListError, match=r"huge.xml.gz is larger than .* MB \(unpacked\)"):
        read_list(path)


@pytest.mark.parametrize("name, content", [
    ("many.csv", "anime_id,rating\n" + "".join(f"{i},8\n" for i in range(1, 8))),
    ("many.xml", mal_export([(i, 8, "Completed", 1) for i in range(1, 8)])),
])
def test_entry_limit(tmp_path, monkeypatch, name, content):
    """A list of more anime than the limit is refused, by name, whatever its format; blank lines are skipped."""
    monkeypatch.setattr(profiles, "MAX_ENTRIES", 6)
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ListError, match=rf"{name} lists .*anime; .*limit"):
        read_list(path)
    monkeypatch.setattr(profiles, "MAX_ENTRIES", 7)
    path.write_text(content.replace("2,8\n", "2,8\n\n"))
    assert len(read_list(path)) == 7


def test_missing_file(tmp_path):
    with pytest.raises(ListError, match="does not exist"):
        read_list(tmp_path / "nope.csv")


def test_records_and_titles():
    listed = from_records([{"anime_id": 1, "rating": 9}, {"anime_id": "5"}, {"anime_id": 7, "rating": 0}])
    assert listed.anime_ids.tolist() == [1, 5, 7] and np.isnan(listed.ratings[1:]).all()
    with pytest.raises(ListError, match=r"entry 1: expected an object with anime_id"):
        from_records([{"anime_id": 1}, {"rating": 3}])
    with pytest.raises(ListError, match="must be a list of"):
        from_records("1,9")
    liked = from_titles(["a", "b"], {"a": 10, "b": 20}.__getitem__)
    assert liked.anime_ids.tolist() == [10, 20] and (liked.ratings == LIKE_RATING).all()

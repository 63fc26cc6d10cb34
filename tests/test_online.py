"""Lists by username (animerec/online.py) against stand-in MyAnimeList and AniList servers on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest

from animerec.data.download import RetryPolicy
from animerec.errors import RecommenderError
from animerec.online import ListFetcher
from animerec.profiles import ListError, read_list
from tests.conftest import free_port

FAST = RetryPolicy(attempts=3, backoff_s=0.01, connect_timeout_s=2, read_timeout_s=0.5, methods=("GET", "POST"))


class StandIn:
    """One HTTP server on 127.0.0.1 whose answers the test scripts: ``answer(method, path, query, body)`` returns
    ``(status, headers, body bytes)`` or sleeps (a hanging server)."""

    def __init__(self, answer):
        outer = self
        self.requests: list[tuple[str, str, dict]] = []

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                parsed = urlparse(self.path)
                outer.requests.append((method, parsed.path, dict(self.headers)))
                status, headers, data = answer(method, parsed.path, parse_qs(parsed.query), body)
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # the client gave up waiting (the hanging server's test)
                    pass

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def stand_in(monkeypatch):
    servers = []

    def make(answer, site="mal"):
        server = StandIn(answer)
        servers.append(server)
        monkeypatch.setenv("ANIMEREC_MAL_API_URL" if site == "mal" else "ANIMEREC_ANILIST_API_URL",
                           server.url + ("/v2" if site == "mal" else "/graphql"))
        monkeypatch.setenv("MAL_CLIENT_ID", "test-client")
        return server

    yield make
    for server in servers:
        server.close()


def ok(payload) -> tuple:
    return 200, {}, json.dumps(payload).encode()


def mal_pages(entries: list[dict], base: str, per_page: int = 1000):
    """A MAL API v2 animelist, paged as MAL pages it (``paging.next`` a full URL)."""

    def answer(method, path, query, body):
        offset = int(query.get("offset", ["0"])[0])
        assert query["nsfw"] == ["true"] and query["fields"] == ["list_status"]
        page = entries[offset:offset + per_page]
        paging = {"next": f"{base()}{path}?fields=list_status&limit={per_page}&nsfw=true&offset={offset + per_page}"} \
            if offset + per_page < len(entries) else {}
        return ok({"data": [{"node": {"id": e["id"], "title": f"Anime {e['id']}"},
                             "list_status": {"status": e["status"], "score": e["score"]}} for e in page],
                   "paging": paging})

    return answer


def test_a_mal_list_over_several_pages_reads_as_an_upload_does(stand_in):
    entries = [{"id": 1, "status": "completed", "score": 9}, {"id": 5, "status": "dropped", "score": 3},
               {"id": 6, "status": "plan_to_watch", "score": 0}, {"id": 30, "status": "watching", "score": 0}]
    holder = {}
    server = stand_in(mal_pages(entries, lambda: holder["url"], per_page=2))
    holder["url"] = server.url
    listed = ListFetcher(retry=FAST).fetch("mal", "someone")
    assert listed.anime_ids.tolist() == [1, 5, 6, 30] and listed.planned.tolist() == [False, False, True, False]
    assert listed.ratings[:2].tolist() == [9, 3] and np.isnan(listed.ratings[2:]).all()  # 0 = not rated
    assert len(server.requests) == 2 and server.requests[0][2]["X-MAL-CLIENT-ID"] == "test-client"
    assert server.requests[0][1] == "/v2/users/someone/animelist"


def test_a_10000_entry_list_and_the_cache(stand_in):
    entries = [{"id": i, "status": "completed", "score": 1 + i % 10} for i in range(1, 10_001)]
    holder = {}
    server = stand_in(mal_pages(entries, lambda: holder["url"]))
    holder["url"] = server.url
    fetcher = ListFetcher(retry=FAST)
    listed = fetcher.fetch("mal", "Big")
    assert len(listed) == 10_000 and len(server.requests) == 10
    assert fetcher.fetch("mal", "big") is listed and len(server.requests) == 10  # from the cache
    assert ListFetcher(retry=FAST, ttl_s=0).fetch("mal", "big") is not listed  # a stale entry is fetched again


@pytest.mark.parametrize("status, body, message", [
    (404, {"error": "not_found"}, "MyAnimeList user 'nobody' does not exist"),
    (403, {"error": "forbidden"}, "the list is private"),
    (401, {"error": "invalid_client"}, "client ID was refused"),
    (418, {"error": "teapot"}, r"MyAnimeList answered HTTP 418 for MyAnimeList user 'nobody'; the service may be down"),
    (200, ["not", "an", "object"], r"MyAnimeList sent an unexpected answer for MyAnimeList user 'nobody'"),
])
def test_mal_errors_a_person_understands(stand_in, status, body, message):
    stand_in(lambda *a: (status, {}, json.dumps(body).encode()))
    with pytest.raises(ListError, match=message):
        ListFetcher(retry=FAST).fetch("mal", "nobody")


def test_an_unreachable_site_says_so(monkeypatch):
    monkeypatch.setenv("ANIMEREC_ANILIST_API_URL", f"http://127.0.0.1:{free_port()}/graphql")
    with pytest.raises(ListError, match=r"Cannot reach AniList \(ConnectionError\); check the connection, or upload"):
        ListFetcher(retry=FAST).fetch("anilist", "someone")


def test_the_cache_keeps_the_latest_lists(stand_in):
    page = ok({"data": [{"node": {"id": 1}, "list_status": {"status": "completed", "score": 8}}], "paging": {}})
    server = stand_in(lambda *a: page)
    fetcher = ListFetcher(retry=FAST, max_lists=2)
    first = fetcher.fetch("mal", "one")
    fetcher.fetch("mal", "two")
    assert fetcher.fetch("mal", "one") is first and len(server.requests) == 2  # used: now the latest
    fetcher.fetch("mal", "three")  # the least recently used, "two", leaves
    assert fetcher.fetch("mal", "one") is first and len(server.requests) == 3
    fetcher.fetch("mal", "two")
    assert len(server.requests) == 4


def test_no_client_id_no_request(stand_in, monkeypatch):
    server = stand_in(lambda *a: ok({"data": []}))
    monkeypatch.delenv("MAL_CLIENT_ID")
    with pytest.raises(ListError, match="needs a MAL API client ID.*MAL_CLIENT_ID"):
        ListFetcher(retry=FAST).fetch("mal", "someone")
    assert server.requests == []


def test_429_with_retry_after_then_500_then_success(stand_in):
    answers = iter([(429, {"Retry-After": "1"}, b"{}"), (500, {}, b"oops")])
    page = ok({"data": [{"node": {"id": 1}, "list_status": {"status": "completed", "score": 8}}], "paging": {}})
    server = stand_in(lambda *a: next(answers, page))
    started = time.monotonic()
    listed = ListFetcher(retry=FAST).fetch("mal", "patient")
    assert listed.anime_ids.tolist() == [1] and len(server.requests) == 3
    assert time.monotonic() - started >= 0.9  # Retry-After was honoured


def test_rate_limited_past_the_retries_says_when_to_come_back(stand_in):
    stand_in(lambda *a: (429, {"Retry-After": "0"}, b"{}"))
    with pytest.raises(ListError, match="rate-limiting requests; try again in 0 s"):
        ListFetcher(retry=FAST).fetch("mal", "busy")


def test_malformed_json_and_a_hanging_server(stand_in):
    stand_in(lambda *a: (200, {}, b"{not json"))
    with pytest.raises(ListError, match="malformed answer"):
        ListFetcher(retry=FAST).fetch("mal", "someone")

    def hang(*a):
        time.sleep(2)
        return ok({})

    stand_in(hang)
    with pytest.raises(ListError, match=r"did not answer within 0.5 s \(tried 3 times\)"):
        ListFetcher(retry=FAST).fetch("mal", "someone")


def test_bad_usernames_are_refused_before_any_request(stand_in):
    server = stand_in(lambda *a: ok({}))
    for name in ("", "a/b", "x" * 65, "a b"):
        with pytest.raises(ListError, match="is not a MyAnimeList username"):
            ListFetcher(retry=FAST).fetch("mal", name)
    assert server.requests == []


def anilist_chunks(chunks: list[list[dict]]):
    def answer(method, path, query, body):
        assert method == "POST" and "POINT_10_DECIMAL" in body["query"]
        chunk = body["variables"]["chunk"]
        lists = chunks[chunk - 1]
        return ok({"data": {"MediaListCollection": {"lists": lists, "hasNextChunk": chunk < len(chunks)}}})

    return answer


def entry(mal_id, status="COMPLETED", score=8.5):
    return {"status": status, "score": score, "media": {"idMal": mal_id}}


def test_an_anilist_list_in_chunks_with_custom_lists_and_missing_mal_ids(stand_in):
    chunks = [[{"isCustomList": True, "entries": [entry(1, score=9.5)]},
               {"isCustomList": False, "entries": [entry(1, score=9.5), entry(None), entry(5, "DROPPED", 0.4)]}],
              [{"isCustomList": False, "entries": [entry(6, "PLANNING", 0), entry(None), entry(30, "CURRENT", 0)]}]]
    server = stand_in(anilist_chunks(chunks), site="anilist")
    listed = ListFetcher(retry=FAST).fetch("anilist", "fan")
    assert listed.anime_ids.tolist() == [1, 5, 6, 30] and listed.planned.tolist() == [False, False, True, False]
    assert listed.ratings[:2].tolist() == [9.5, 1.0] and np.isnan(listed.ratings[2:]).all()  # 0.4 reads as 1
    assert "2 entries without a MAL ID skipped" in listed.source and len(server.requests) == 2


@pytest.mark.parametrize("message, expected", [("User not found", "does not exist"),
                                               ("Private User", "the list is private")])
def test_anilist_errors(stand_in, message, expected):
    body = {"errors": [{"message": message, "status": 404}], "data": {"MediaListCollection": None}}
    stand_in(lambda *a: (404, {}, json.dumps(body).encode()), site="anilist")
    with pytest.raises(ListError, match=expected):
        ListFetcher(retry=FAST).fetch("anilist", "ghost")


def test_a_list_by_username_answers_as_the_same_list_uploaded(stand_in, tmp_path):
    """The same list through --mal-user / --anilist-user, the page's username box and the pyfunc gets the answer the
    uploaded file gets."""
    import urllib.parse
    import urllib.request

    from animerec.cli import build_parser, request_from
    from animerec.pyfunc import AnimeRecPyfunc
    from animerec.service import RecommendationService
    from animerec.web import create_app
    from tests.test_recommenders import hand_built
    from tests.test_web import serving

    (tmp_path / "model").mkdir()
    service = RecommendationService(hand_built(tmp_path / "model"))
    (tmp_path / "list.csv").write_text("anime_id,rating\n10,9\n40,3\n")
    uploaded = service.answer({"kind": "rating_recs", "ratings": read_list(tmp_path / "list.csv"), "sequels": "show"})
    expected = [row["anime_id"] for row in uploaded["anime"]]
    assert len(expected) >= 2
    holder = {}
    mal = stand_in(mal_pages([{"id": 10, "status": "completed", "score": 9}, {"id": 40, "status": "dropped", "score": 3}],
                             lambda: holder["url"]))
    holder["url"] = mal.url
    stand_in(anilist_chunks([[{"isCustomList": False, "entries": [entry(10, score=9.0), entry(40, "DROPPED", 3.0)]}]]),
             site="anilist")
    for flag in ("--mal-user", "--anilist-user"):
        request = request_from(build_parser().parse_args(["recommend", flag, "fan", "--sequels", "show"]))
        assert [row["anime_id"] for row in service.answer(request)["anime"]] == expected
    pyfunc = AnimeRecPyfunc()
    pyfunc.service = service
    answers = pyfunc.predict(None, pd.DataFrame([{"kind": "rating_recs", "mal_user": "fan", "sequels": "show"}]))
    assert [row["anime_id"] for row in answers[0]["anime"]] == expected
    with serving(create_app(service)) as base:
        form = urllib.parse.urlencode({"username": "fan", "site": "anilist", "sequels": "show"}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{base}/recommend", data=form)) as response:
            page = response.read().decode()
        titles = [row["title"] for row in uploaded["anime"]]
        assert all(title in page for title in titles) and page.index(titles[0]) < page.index(titles[-1])
        form = urllib.parse.urlencode({"username": "ghost/x", "site": "mal"}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{base}/recommend", data=form))
        assert refused.value.code == 400 and "is not a MyAnimeList username" in refused.value.read().decode()


def test_a_list_over_the_upload_limit_is_refused_as_an_upload_is(stand_in):
    entries = [{"id": i, "status": "completed", "score": 8} for i in range(1, 100_002)]
    stand_in(mal_pages(entries, lambda: "", per_page=len(entries)))  # one oversized page: no paging needed
    with pytest.raises(ListError, match="lists more than 100,000 anime; that is the limit"):
        ListFetcher(retry=dataclasses.replace(FAST, read_timeout_s=60)).fetch("mal", "hoarder")  # a big page


# English titles as fans type them -> the MAL ID AniList's search gives (idMal), for the stand-in AniList
ENGLISH = {"attack on titan": 16498, "spirited away": 199, "your name": 32281, "my hero academia": 31964,
           "a silent voice": 28851, "demon slayer": 38000, "fullmetal alchemist brotherhood": 5114}


def anilist_search(answers: dict):
    """A stand-in AniList answering ``Page { media(search:) }`` from ``answers`` (title -> [(idMal, isAdult)])."""

    def answer(method, path, query, body):
        assert "media(search: $search, type: ANIME)" in body["query"]
        found = answers.get(body["variables"]["search"].lower(), [])
        return ok({"data": {"Page": {"media": [{"idMal": mal_id, "isAdult": adult, "title": {"english": "x"},
                                                "synonyms": []} for mal_id, adult in found]}}})

    return answer


@pytest.fixture(scope="module")
def catalogue():
    from animerec.data import demo
    from animerec.data.layouts import load_anime

    return load_anime(demo.catalogue_path())  # the whole 2020 catalogue: romaji names only


def test_english_titles_resolve_through_anilist_search_and_are_cached(stand_in, catalogue):
    from animerec.online import TitleSearch
    from animerec.titles import TitleIndex

    answers = {title: [(999999999, False), (mal_id, False)] for title, mal_id in ENGLISH.items()}  # first: unknown
    answers["cherry blossoms after winter"] = [(42, True)]  # AniList's only answer is adult: not taken
    server = stand_in(anilist_search(answers), site="anilist")
    titles = TitleIndex(catalogue, search=TitleSearch())
    for title, mal_id in ENGLISH.items():
        assert titles.find(title) == mal_id, title
    asked = len(server.requests)
    assert titles.find("Attack on Titan") == 16498 and len(server.requests) == asked  # cached, case aside
    with pytest.raises(RecommenderError, match="AniList's search found no anime this model knows"):
        titles.find("cherry blossoms after winter")


def test_offline_romaji_titles_resolve_and_an_english_one_fails_in_seconds(monkeypatch, catalogue):
    from animerec.online import TitleSearch
    from animerec.titles import TitleIndex

    monkeypatch.setenv("ANIMEREC_ANILIST_API_URL", f"http://127.0.0.1:{free_port()}/graphql")
    titles = TitleIndex(catalogue, search=TitleSearch())
    assert titles.find("shingeki no kyojin") == 16498 and titles.find("steins gate") == 9253
    assert titles.find("kimi no na wa") == 32281 and titles.find("sen to chihiro no kamikakushi") == 199
    shared = titles.lookup("code geass")  # a franchise's shared words: its most-watched entry, the others named
    assert shared.anime_id == 1575 and "Code Geass: Hangyaku no Lelouch R2" in shared.others
    started = time.perf_counter()
    with pytest.raises(RecommenderError, match=r"No anime titled 'attack on titan' in the catalogue.*AniList.*could "
                                               r"not be asked \(Cannot reach AniList"):
        titles.find("attack on titan")
    assert time.perf_counter() - started < 30


def test_adult_anime_are_never_suggested_nor_guessed(catalogue):
    from animerec.titles import TitleIndex, is_adult

    titles = TitleIndex(catalogue)
    adult = set(catalogue.anime_id[is_adult(catalogue)])
    assert len(adult) > 100  # the 2020 catalogue's Hentai
    for query in ("cool", "lingerie", "bible", "code geass", "love"):
        assert not {m.anime_id for m in titles.candidates(query, 20)} & adult, query
    assert titles.find("Cool Devices") in adult  # typed whole, its title still finds it

"""Anyone's public list by username: MyAnimeList (API v2) and AniList (GraphQL), read into an :class:`AnimeList`.

- MyAnimeList: ``GET {MAL}/users/{name}/animelist?fields=list_status&limit=1000&nsfw=true`` with the
  ``X-MAL-CLIENT-ID`` header (from ``MAL_CLIENT_ID``; MAL gives one to anyone who registers an app),
  following ``paging.next`` as given. Without ``nsfw=true`` MAL silently leaves entries out.
- AniList: ``MediaListCollection(userName:, type: ANIME)`` in chunks, scores asked in
  ``POINT_10_DECIMAL`` (every user's scale then reads 0-10), the MAL ID from ``media { idMal }``; entries
  without one are skipped and counted, an anime on custom lists too is read once. Public lists need no key.

Both end in the :class:`AnimeList` an upload gives (score 0 = not rated, plan-to-watch = planned), with the
upload's limits. Requests go through urllib3's ``Retry`` as downloads do (429 honours ``Retry-After``, 5xx
and dropped connections are retried), with a timeout; every failure is a :class:`ListError` that says which
user, which site and what to do. :class:`ListFetcher` keeps fetched lists a few minutes in memory (bounded),
so that changing a filter does not fetch again; nothing about a person is written to disk. :class:`TitleSearch`
asks AniList's search for a title the catalogue does not know ("attack on titan"); :class:`Covers` its covers.
The base URLs are ``ANIMEREC_MAL_API_URL`` and ``ANIMEREC_ANILIST_API_URL`` (tests point them at 127.0.0.1).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import quote

import requests
import urllib3

from animerec.data.download import RetryPolicy
from animerec.profiles import MAX_ENTRIES, AnimeList, ListError, from_records

MAL_API_URL = "https://api.myanimelist.net/v2"
ANILIST_API_URL = "https://graphql.anilist.co"
NAMES = {"mal": "MyAnimeList", "anilist": "AniList"}
MAL_PLANNED, ANILIST_PLANNED = "plan_to_watch", "PLANNING"
ANILIST_SEARCH = """query ($search: String, $perPage: Int) {
  Page(perPage: $perPage) { media(search: $search, type: ANIME) { idMal isAdult title { romaji english native } synonyms } }
}"""
ANILIST_QUERY = """query ($userName: String, $chunk: Int, $perChunk: Int) {
  MediaListCollection(userName: $userName, type: ANIME, chunk: $chunk, perChunk: $perChunk) {
    lists { isCustomList entries { status score(format: POINT_10_DECIMAL) media { idMal } } }
    hasNextChunk
  }
}"""
ANILIST_COVERS = """query ($ids: [Int], $perPage: Int) {
  Page(perPage: $perPage) { media(idMal_in: $ids, type: ANIME) { idMal isAdult coverImage { large medium } } }
}"""
QUICK = dict(attempts=1, backoff_s=0.0, methods=("POST",))  # one try: offline, the answer comes without it


@dataclass
class ListFetcher:
    """Fetches public lists by username; lists stay ``ttl_s`` seconds in memory, ``max_lists`` at most."""

    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=4, backoff_s=0.5, connect_timeout_s=5.0,
                                                                   read_timeout_s=20.0, methods=("GET", "POST")))
    ttl_s: float = 300.0
    max_lists: int = 32
    _cache: "Recent" = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cache = Recent(self.ttl_s, self.max_lists)

    def fetch(self, site: str, user: str) -> AnimeList:
        """``site`` (``mal`` or ``anilist``) user ``user``'s list, from the cache when it is fresh."""
        user = _username(user, site)
        return self._cache.get((site, user.lower()), lambda: (mal_list if site == "mal" else anilist_list)(
            user, self.retry))


@dataclass
class TitleSearch:
    """AniList's search (English, romaji, native names and synonyms) for a title the catalogue does not know:
    ``search(title)`` gives ``[(MAL ID, is adult)]``, best first (entries without a MAL ID left out), or raises a
    :class:`ListError` saying why AniList could not be asked. One quick try, so that offline it fails in seconds;
    answers stay ``ttl_s`` in memory, ``max_titles`` at most."""

    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(connect_timeout_s=3.0, read_timeout_s=5.0, **QUICK))
    ttl_s: float = 3600.0
    max_titles: int = 512
    _cache: "Recent" = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cache = Recent(self.ttl_s, self.max_titles)

    def __call__(self, title: str) -> list[tuple[int, bool]]:
        return self._cache.get(" ".join(str(title).lower().split()), lambda: self._ask(title))

    def _ask(self, title: str) -> list[tuple[int, bool]]:
        media = anilist_page(ANILIST_SEARCH, {"search": str(title), "perPage": 10}, self.retry)
        return [(int(m["idMal"]), bool(m.get("isAdult"))) for m in media if m.get("idMal")]


@dataclass
class Covers:
    """Cover images from AniList: ``covers(mal_ids)`` gives ``{MAL ID: image URL}`` for up to 50 anime in one request
    (``media(idMal_in:)``), waiting about 2 s at most; ``{}`` when AniList cannot be asked, so a page renders
    without images. Adult entries are never returned. Answers stay ``ttl_s`` in memory, ``max_answers`` at most."""

    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(connect_timeout_s=1.0, read_timeout_s=1.5, **QUICK))
    ttl_s: float = 3600.0
    max_answers: int = 256
    _cache: "Recent" = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cache = Recent(self.ttl_s, self.max_answers)

    def __call__(self, mal_ids) -> dict[int, str]:
        ids = tuple(sorted({int(i) for i in mal_ids}))[:50]
        return self._cache.get(ids, lambda: self._ask(ids)) if ids else {}

    def _ask(self, ids: tuple[int, ...]) -> dict[int, str]:
        try:
            media = anilist_page(ANILIST_COVERS, {"ids": list(ids), "perPage": 50}, self.retry)
        except ListError:
            return {}
        found = {m.get("idMal"): (m.get("coverImage") or {}) for m in media if not m.get("isAdult")}
        urls = {i: image.get("large") or image.get("medium") for i, image in found.items() if i}
        return {int(i): url for i, url in urls.items() if url}


def anilist_page(query: str, variables: dict, retry: RetryPolicy) -> list[dict]:
    """The ``Page { media }`` entries AniList answers to ``query``; a :class:`ListError` when it cannot be asked."""
    url, session = os.environ.get("ANIMEREC_ANILIST_API_URL", ANILIST_API_URL), retry.session()
    body = {"query": query, "variables": variables}
    page = _call(lambda: session.post(url, json=body, timeout=retry.timeouts), "anilist", "", retry)
    return [m for m in ((page.get("data") or {}).get("Page") or {}).get("media") or [] if isinstance(m, dict)]


@dataclass
class Recent:
    """Answers kept ``ttl_s`` seconds in memory, ``size`` at most: the least recently asked leaves first."""

    ttl_s: float
    size: int
    _entries: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, key, make):
        """The fresh answer for ``key``, or ``make()``'s, kept (two threads may both make one; either is kept)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                self._entries.move_to_end(key)
                return hit[1]
        value = make()
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value


def _username(user: str, site: str) -> str:
    user = str(user or "").strip()
    if not user or len(user) > 64 or any(ch in user for ch in "/?#&% "):
        raise ListError(f"{user!r} is not a {NAMES[site]} username (letters, digits, _ and -, at most 64).")
    return user


def mal_list(user: str, retry: RetryPolicy) -> AnimeList:
    """A MyAnimeList user's public list (every page)."""
    client_id = os.environ.get("MAL_CLIENT_ID", "").strip()
    if not client_id:
        raise ListError("Reading a MyAnimeList list by username needs a MAL API client ID: create one at "
                        "https://myanimelist.net/apiconfig and set MAL_CLIENT_ID, or upload your list's export.")
    url = (f"{os.environ.get('ANIMEREC_MAL_API_URL', MAL_API_URL).rstrip('/')}/users/{quote(user)}/animelist"
           f"?fields=list_status&limit=1000&nsfw=true")
    records, session = [], retry.session()
    while url:
        page = _call(lambda: session.get(url, headers={"X-MAL-CLIENT-ID": client_id}, timeout=retry.timeouts),
                     "mal", user, retry)
        for entry in page.get("data") or []:
            status = entry.get("list_status") or {}
            records.append({"anime_id": (entry.get("node") or {}).get("id"), "rating": status.get("score") or 0,
                            "planned": status.get("status") == MAL_PLANNED, "dropped": status.get("status") == "dropped"})
        _check_size(records, "mal", user)
        url = (page.get("paging") or {}).get("next")
    return from_records(records, f"MyAnimeList user {user}")


def anilist_list(user: str, retry: RetryPolicy) -> AnimeList:
    """An AniList user's public list (every chunk), by MAL ID; entries without one are skipped and counted."""
    url = os.environ.get("ANIMEREC_ANILIST_API_URL", ANILIST_API_URL)
    session, chunk, found, missing = retry.session(), 1, {}, 0
    while True:
        body = {"query": ANILIST_QUERY, "variables": {"userName": user, "chunk": chunk, "perChunk": 500}}
        page = _call(lambda: session.post(url, json=body, timeout=retry.timeouts), "anilist", user, retry)
        collection = (page.get("data") or {}).get("MediaListCollection") or {}
        for listed in sorted(collection.get("lists") or [], key=lambda lst: bool(lst.get("isCustomList"))):
            for entry in listed.get("entries") or []:
                mal_id = (entry.get("media") or {}).get("idMal")
                if mal_id is None:
                    missing += 1
                elif mal_id not in found:  # an anime on a custom list is on a status list too
                    score = float(entry.get("score") or 0)
                    found[mal_id] = {"anime_id": mal_id, "rating": max(score, 1.0) if score else 0,
                                     "planned": entry.get("status") == ANILIST_PLANNED,
                                     "dropped": entry.get("status") == "DROPPED"}
        _check_size(found, "anilist", user)
        if not collection.get("hasNextChunk"):
            break
        chunk += 1
    skipped = f" ({missing} {'entry' if missing == 1 else 'entries'} without a MAL ID skipped)" if missing else ""
    return from_records(list(found.values()), f"AniList user {user}{skipped}")


def _check_size(records, site: str, user: str) -> None:
    if len(records) > MAX_ENTRIES:
        raise ListError(f"{NAMES[site]} user {user} lists more than {MAX_ENTRIES:,} anime; that is the limit.")


def _call(send, site: str, user: str, retry: RetryPolicy) -> dict:
    """``send()`` (a request, retried by the session) and its JSON, with every failure a ListError."""
    try:
        return _json(send(), site, user)
    except requests.RequestException as err:
        reason = getattr(err.args[0], "reason", None) if err.args else None  # what urllib3 gave up on
        # urllib3's NewConnectionError (refused, no such host) is also a ConnectTimeoutError: not a timeout here
        timeout = isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
            reason, urllib3.exceptions.NewConnectionError)
        if not isinstance(err, requests.Timeout) and not timeout:
            raise ListError(f"Cannot reach {NAMES[site]} ({type(err).__name__}); check the connection, or upload "
                            f"the list's export.") from None
        raise ListError(f"{NAMES[site]} did not answer within {retry.read_timeout_s:g} s (tried {retry.attempts} "
                        f"times); try again later, or upload the list's export.") from None


def _json(response: requests.Response, site: str, user: str) -> dict:
    """The answer's JSON; a ListError a person understands for every way it can fail."""
    who = f"{NAMES[site]} user {user!r}" if user else f"{NAMES[site]}'s search"
    status = response.status_code
    if status >= 400:
        if status in (401, 403) or "private" in response.text.lower():
            what = "the MAL client ID was refused (check MAL_CLIENT_ID)" if status == 401 else "the list is private"
            raise ListError(f"{who}: {what}. Make the list public, or upload its export instead.")
        if status == 404:
            raise ListError(f"{who} does not exist; check the spelling (the name in the profile's address).")
        if status == 429:
            wait = response.headers.get("Retry-After", "60")
            raise ListError(f"{NAMES[site]} is rate-limiting requests; try again in {wait} s.")
        raise ListError(f"{NAMES[site]} answered HTTP {status} for {who}; the service may be down, try again later.")
    try:
        data = response.json()
    except ValueError:
        raise ListError(f"{NAMES[site]} sent a malformed answer for {who}; try again later.") from None
    if not isinstance(data, dict):
        raise ListError(f"{NAMES[site]} sent an unexpected answer for {who}; try again later.")
    return data

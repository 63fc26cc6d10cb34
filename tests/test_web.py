"""The web page (`animerec web`), driven in headless Chromium: its rows are the service's answers."""

from __future__ import annotations

import contextlib
import gzip
import shutil
import threading
import time

import pytest

from animerec.artifacts import ArtifactStore
from animerec.profiles import read_list
from animerec.recommenders import EmbeddingRecommender
from animerec.service import RecommendationService
from tests.conftest import free_port

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn on 127.0.0.1 in a thread (its lifespan included); yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "the web server did not start in 30 s"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def site(trained):
    """The page for the trained demo model, served by uvicorn on 127.0.0.1 in a thread."""
    from animerec.web import create_app

    cfg, _, result = trained
    version = ArtifactStore(cfg.main.artifact_root).resolve(result["model"])
    service = RecommendationService.from_path(version.path)
    with serving(create_app(service, version.path, version.ref)) as base:
        yield base, service


def test_forked_worker_processes_answer_as_the_service(site):
    """With ``processes`` (what ``animerec web`` does where the OS forks) a query runs in a worker process that
    the app's lifespan forked, and the page shows the service's answer."""
    import urllib.request

    from animerec.web import create_app

    _, service = site
    first = service.answer({"kind": "similar_anime", "query": "Naruto", "n": 3})["anime"][0]["title"]
    with serving(create_app(service, processes=True, workers=1)) as base:
        with urllib.request.urlopen(f"{base}/similar-anime?title=Naruto&n=3") as response:
            assert response.status == 200 and first in response.read().decode()



def test_the_server_runs_blas_in_one_thread(site, monkeypatch):
    """``animerec web`` holds BLAS to one thread (its extra threads would spin on the core the next query needs)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from animerec import web

    blas = [m for m in threadpool_info() if m["user_api"] == "blas"]
    monkeypatch.setattr(web.uvicorn, "run", lambda *args, **kwargs: None)  # everything serve() does but serving
    try:
        threadpool_limits(2, user_api="blas")
        web.serve(site[1], None, "model", processes=False)
        assert blas and all(m["num_threads"] == 1 for m in threadpool_info() if m["user_api"] == "blas")
    finally:
        threadpool_limits(max(m["num_threads"] for m in blas) if blas else None, user_api="blas")

def anilist_covers(method, path, query, body):
    """A stand-in AniList answering ``media(idMal_in:)`` with a cover for each ID."""
    from tests.test_online import ok

    assert "media(idMal_in: $ids, type: ANIME)" in body["query"] and len(body["variables"]["ids"]) <= 50
    return ok({"data": {"Page": {"media": [{"idMal": i, "isAdult": False, "coverImage": {
        "large": f"https://img.example/{i}.jpg", "medium": None}} for i in body["variables"]["ids"]]}}})


def test_covers_from_anilist_in_one_request_per_answer_and_none_offline(trained, monkeypatch):
    """With AniList at hand each row of a 10-row answer shows its cover, looked up in one request; unreachable, the
    page still answers, without images, in seconds."""
    import requests

    from animerec.web import create_app
    from tests.test_online import StandIn

    cfg, _, result = trained
    service = RecommendationService.from_path(ArtifactStore(cfg.main.artifact_root).resolve(result["model"]).path)
    anilist = StandIn(anilist_covers)
    monkeypatch.setenv("ANIMEREC_ANILIST_API_URL", anilist.url + "/graphql")
    try:
        with serving(create_app(service)) as base:
            for asked in (lambda: requests.get(f"{base}/similar-anime", params={"title": "Naruto", "n": 10}),
                          lambda: requests.post(f"{base}/recommend", data={"likes": "Naruto\nCowboy Bebop"})):
                before = len(anilist.requests)
                page = asked()
                assert page.status_code == 200 and page.text.count('<img class="cover"') == 10, page.text[-800:]
                assert len(anilist.requests) == before + 1
    finally:
        anilist.close()
    monkeypatch.setenv("ANIMEREC_ANILIST_API_URL", f"http://127.0.0.1:{free_port()}/graphql")
    with serving(create_app(service)) as base:
        started = time.monotonic()
        page = requests.get(f"{base}/similar-anime", params={"title": "Naruto", "n": 10})
        assert page.status_code == 200 and "<img" not in page.text.split("<table")[1] and time.monotonic() - started < 5


def test_covers_come_from_the_catalogue_first_and_never_for_adult_anime():
    from animerec.web import Site

    asked = []
    site = Site(None, None, "model", None, None, covers=lambda ids: asked.extend(ids) or {i: f"c{i}" for i in ids},
                images={1: "own1"}, adult=frozenset({2}))
    tables = [{"id": "results", "rows": [{"anime_id": i} for i in (1, 2, 3)]}, {"id": "users", "rows": [{"user_id": 5}]}]
    site.with_covers(tables)
    assert asked == [3] and [row["cover"] for row in tables[0]["rows"]] == ["own1", None, "c3"]


def test_pages_without_a_browser(site, tmp_path):
    """The HTTP side alone (runs everywhere): answers, suggestions, errors as pages, the model card."""
    import urllib.error
    import urllib.request

    base, service = site
    with urllib.request.urlopen(f"{base}/api/suggest?q=naru") as response:
        found = __import__("json").loads(response.read())
    assert found and found[0]["title"].lower().startswith("naruto")
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(f"{base}/similar-users?user_id=zzz")
    page = bad.value.read().decode()
    assert bad.value.code == 400 and "A user ID must be an integer" in page and "Traceback" not in page
    with urllib.request.urlopen(f"{base}/model") as response:
        card = response.read().decode()
    assert "Test metrics next to the baselines" in card and "popularity" in card
    with urllib.request.urlopen(f"{base}/model/ratings.png") as response:
        assert response.headers["Content-Type"] == "image/png" and response.read()[:4] == b"\x89PNG"


def test_a_bad_upload_and_a_failure_are_pages(site, monkeypatch):
    """A file that is no list is named as uploaded (not by the server's temporary path), HTTP 400; a query
    that fails for a reason not the person's is HTTP 500 saying so, the traceback only in the log."""
    import requests

    base, service = site
    response = requests.post(f"{base}/recommend", files={"ratings_file": ("my list.csv", b"hello,world\n1,2\n")})
    assert response.status_code == 400 and "my list.csv" in response.text and "/tmp" not in response.text
    monkeypatch.setattr(service, "similar_anime", lambda *args: 1 / 0)  # what the page's answer calls
    response = requests.get(f"{base}/similar-anime", params={"title": "Naruto"})
    assert response.status_code == 500 and "Something went wrong" in response.text
    assert "Traceback" not in response.text and "ZeroDivisionError" not in response.text


def test_uploads_over_the_limit_are_refused_before_they_are_read(site):
    import http.client

    from animerec.web import MAX_UPLOAD

    base, _ = site
    port = int(base.rsplit(":", 1)[1])
    # by Content-Length: refused at once, nothing else read
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("POST", "/recommend")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(MAX_UPLOAD + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and b"Upload too large" in response.read()
    connection.close()
    # streamed without a length (chunked): refused once the limit has streamed in
    head = (b'--x\r\nContent-Disposition: form-data; name="ratings_file"; filename="animelist.xml"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n")  # a well-formed file part that never ends
    chunks = iter([head] + [b"a" * (1024 * 1024)] * (MAX_UPLOAD // (1024 * 1024) + 2))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/recommend", body=chunks, encode_chunked=True,
                       headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert connection.getresponse().status == 413
    connection.close()


def test_work_limit_runs_off_the_loop_queues_then_refuses():
    import asyncio

    from animerec.web import Busy, WorkLimit

    limit, gate = WorkLimit(workers=1, queue=1), threading.Event()

    async def scenario():
        first = asyncio.create_task(limit.run(gate.wait, 30))  # holds the only worker, in a thread
        await asyncio.sleep(0)
        second = asyncio.create_task(limit.run(lambda: "queued"))
        await asyncio.sleep(0)
        assert limit.waiting == 1
        with pytest.raises(Busy):
            await limit.run(lambda: "refused")  # the queue is full: HTTP 503 on the page
        assert (await asyncio.wait_for(asyncio.shield(asyncio.sleep(0.01, "loop free")), 5)) == "loop free"
        gate.set()
        return await first, await second

    assert asyncio.run(scenario()) == (True, "queued")


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_a_person_uses_the_page_in_chromium(site, tmp_path):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, service = site
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    wait = WebDriverWait(driver, 20)

    def rows(table_id: str = "results") -> list[int]:
        table = driver.find_element(By.ID, table_id)
        return [int(tr.get_attribute("data-anime-id")) for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    def links_and_reasons(table_id: str = "results") -> list[tuple[str, str]]:
        table = driver.find_element(By.ID, table_id)
        return [(tr.find_element(By.CSS_SELECTOR, "td.title a").get_attribute("href"),
                 tr.find_element(By.CSS_SELECTOR, "td.reason").text)
                for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    try:
        # similar anime: type a title (suggestions appear as you type), tick a type filter, submit
        driver.get(base)
        box = driver.find_element(By.ID, "title")
        box.send_keys("Naruto")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#title-suggestions option"))
        driver.find_element(By.ID, "anime-type-TV").click()
        driver.find_element(By.ID, "similar-anime-go").click()
        wait.until(lambda d: d.find_elements(By.ID, "results"))
        expected = service.answer({"kind": "similar_anime", "query": "Naruto", "types": ["TV"], "n": 10})
        assert rows() == [row["anime_id"] for row in expected["anime"]]
        assert links_and_reasons() == [(f"https://myanimelist.net/anime/{row['anime_id']}", row["reason"])
                                       for row in expected["anime"]] and all(r for _, r in links_and_reasons())
        assert "Anime similar to Naruto" in driver.find_element(By.ID, "heading").text
        driver.save_screenshot(str(tmp_path / "similar_anime.png"))

        # recommendations for an uploaded MyAnimeList export
        listed = [int(a) for a in service.bundle.anime_ids[:5]]
        entries = "".join(f"<anime><series_animedb_id>{a}</series_animedb_id><my_score>{s}</my_score>"
                          f"<my_status>Completed</my_status></anime>" for a, s in zip(listed, (10, 9, 3, 8, 7)))
        export = tmp_path / "animelist.xml.gz"
        export.write_bytes(gzip.compress(f"<myanimelist><myinfo/>{entries}</myanimelist>".encode()))
        driver.get(base)
        driver.find_element(By.ID, "tab-recommend").click()  # one compact form at a time
        driver.find_element(By.ID, "ratings-file").send_keys(str(export))
        driver.find_element(By.ID, "recommend-go").click()
        wait.until(lambda d: d.find_elements(By.ID, "results"))
        expected = service.answer({"kind": "rating_recs", "ratings": read_list(export), "n": 10})
        assert rows() == [row["anime_id"] for row in expected["anime"]] and not set(rows()) & set(listed)
        assert [r for _, r in links_and_reasons()] == [row["reason"] for row in expected["anime"]]
        # the default hides later seasons and films of franchises whose first entry is not on the list
        franchise, first = EmbeddingRecommender(service.bundle).franchises
        started = {franchise[service.bundle.anime_index(a)] for a in listed if first[service.bundle.anime_index(a)]}
        for anime_id in rows():
            index = service.bundle.anime_index(anime_id)
            assert first[index] or franchise[index] in started, anime_id
        assert "animelist.xml.gz: 5 anime listed, 5 rated ones used" in driver.find_element(By.ID, "summary").text
        before = rows()
        # "not interested" on the first row: the same list (kept in the page, no second upload) without it
        old = driver.find_element(By.ID, "results")
        driver.find_element(By.CSS_SELECTOR, "#results tbody tr button.not-interested").click()
        wait.until(expected_conditions.staleness_of(old))
        wait.until(lambda d: d.find_elements(By.ID, "results"))
        expected = service.answer({"kind": "rating_recs", "ratings": read_list(export), "n": 10, "exclude": [before[0]]})
        assert rows() == [row["anime_id"] for row in expected["anime"]] and before[0] not in rows()
        # the franchise switch and the hidden-gems control, chosen on the page, give the service's rows
        Select(driver.find_element(By.ID, "recommend-sequels")).select_by_value("show")
        Select(driver.find_element(By.ID, "recommend-gems")).select_by_value("0.6")
        old = driver.find_element(By.ID, "results")
        driver.find_element(By.ID, "recommend-go").click()
        wait.until(expected_conditions.staleness_of(old))
        wait.until(lambda d: d.find_elements(By.ID, "results"))
        expected = service.answer({"kind": "rating_recs", "ratings": read_list(export), "n": 10, "exclude": [before[0]],
                                   "sequels": "show", "popularity_damping": 0.6})
        assert rows() == [row["anime_id"] for row in expected["anime"]]
        driver.save_screenshot(str(tmp_path / "page.png"))

        # bad input: a visible message, no stack trace
        driver.get(f"{base}/?tab=similar-users")
        driver.find_element(By.ID, "user-id").send_keys("not-a-user")
        driver.find_element(By.ID, "similar-users-go").click()
        message = wait.until(lambda d: d.find_element(By.ID, "error")).text
        assert "A user ID must be an integer" in message and "Traceback" not in driver.page_source
    finally:
        driver.quit()


def test_every_form_answers_over_http(site):
    """Each form without a browser: similar users (with their table), liked titles, a username-less empty form, a
    missing title, a damaged saved list; the model's pictures (a loss curve when the model has one, else 404)."""
    import requests

    base, service = site
    user = int(service.bundle.user_ids[0])
    page = requests.get(f"{base}/similar-users", params={"user_id": user, "n": 5})
    expected = service.answer({"kind": "similar_users", "query": user, "n": 5})
    assert page.status_code == 200 and all(f">{row['user_id']}<" in page.text for row in expected["users"])
    mine = requests.post(f"{base}/similar-users", data={"likes": "Naruto\nCowboy Bebop", "n": 5})  # your own list
    expected = service.answer({"kind": "similar_users", "likes": ["Naruto", "Cowboy Bebop"], "n": 5})
    assert mine.status_code == 200 and all(f">{row['user_id']}<" in mine.text for row in expected["users"])
    assert all(f'<span class="english">{row["english_title"]}</span>' in mine.text for row in expected["anime"]
               if row["english_title"] and row["english_title"] != row["title"] and "&" not in row["english_title"])
    likes = requests.post(f"{base}/recommend", data={"likes": "Naruto\nCowboy Bebop"})
    expected = service.answer({"kind": "rating_recs", "likes": ["Naruto", "Cowboy Bebop"], "n": 10})
    assert likes.status_code == 200 and all(f'data-anime-id="{row["anime_id"]}"' in likes.text
                                            for row in expected["anime"])
    for response, message in [
        (requests.post(f"{base}/recommend", data={}), "Upload your MyAnimeList export or a ratings CSV"),
        (requests.get(f"{base}/similar-anime", params={"title": "  "}), "Type a title first."),
        (requests.post(f"{base}/recommend", data={"list_state": "[{"}), "The page&#39;s saved list is unreadable"),
    ]:
        assert response.status_code == 400 and message in response.text, response.text[-500:]
    curve = requests.get(f"{base}/model/loss_curve.png")
    assert curve.status_code == 200 and curve.content[:4] == b"\x89PNG"
    assert requests.get(f"{base}/model/nothing.png").status_code == 404


def test_a_full_queue_is_a_503_with_retry_after(site, monkeypatch):
    """One query at a time and none waiting: a second query while the first runs gets the busy page."""
    import requests

    from animerec.web import create_app

    _, service = site
    started, release = threading.Event(), threading.Event()

    def slow(*args):
        started.set()
        release.wait(30)
        raise ValueError("never shown")

    monkeypatch.setattr(service, "similar_anime", slow)
    with serving(create_app(service, workers=1, queue=0)) as base:
        first = threading.Thread(target=requests.get, args=(f"{base}/similar-anime?title=Naruto",))
        first.start()
        assert started.wait(30)
        busy = requests.get(f"{base}/similar-anime", params={"title": "Naruto"})
        release.set()
        first.join(30)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2" and "server is busy" in busy.text


def test_animerec_web_serves_the_model_it_is_given(trained, monkeypatch):
    """``animerec web --model FOLDER --port P`` loads that model and serves it on 127.0.0.1:P."""
    from animerec import cli, web

    cfg, _, result = trained
    version = ArtifactStore(cfg.main.artifact_root).resolve(result["model"])
    served = {}
    monkeypatch.setattr(web, "serve", lambda service, path, ref, host, port: served.update(
        anime=len(service.bundle.anime_ids), path=path, ref=ref, host=host, port=port))
    assert cli.main(["web", "--model", str(version.path), "--port", "9001"]) == 0
    assert served == {"anime": len(RecommendationService.from_path(version.path).bundle.anime_ids),
                      "path": version.path, "ref": version.ref, "host": "127.0.0.1", "port": 9001}

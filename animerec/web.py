"""``animerec web``: a small web page over :class:`animerec.service.RecommendationService`.

The page answers the same queries as the CLI and the pyfunc server, so it shows the same
rows: similar anime for a title (with suggestions as you type), recommendations for anyone
(an uploaded MyAnimeList export or ratings CSV, or a few liked titles), similar users and
their favourites for a dataset user, all with the genre, type and score filters; and a model
page (data size, metrics next to the baselines, the loss curve and the rating histogram).

FastAPI (already under MLflow's scoring server) with one Jinja template; bad input is shown on
the page (HTTP 400), never a stack trace. It binds to 127.0.0.1 unless told otherwise.

Under load: the CPU work of a query (reading an upload, folding it in, ranking) runs in worker
threads, never on the event loop, so title suggestions stay fast while lists are uploaded; at most
``workers`` such queries run at once and ``queue`` more wait, the rest get HTTP 503 with
``Retry-After``. An upload over :data:`MAX_UPLOAD` bytes is refused from its ``Content-Length``, or
as soon as that many bytes have streamed in, before anything is spooled to disk (HTTP 413).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from animerec.config import TYPES
from animerec.errors import UserError
from animerec.plots import figure
from animerec.profiles import MAX_BYTES, from_records, read_list
from animerec.recommenders import Catalogue
from animerec.service import DEFAULT_SEQUELS
from animerec.titles import normalise

logger = logging.getLogger(__name__)

# the columns a fan reads, in order (raw model scores stay in the JSON answer, not on the page)
SCORE_COLUMNS = ("predicted_rating", "mean_rating")

MAX_UPLOAD = 16 * 1024 * 1024  # bytes of one request body: a gzipped MAL export of 20,000 anime is ~1 MB
RETRY_AFTER_S = 2
FORMS = {"similar_anime": "similar-anime", "rating_recs": "recommend", "similar_users": "similar-users"}  # kind -> tab


class _TooLarge(Exception):
    pass


class UploadLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets HTTP 413, judged by its ``Content-Length`` or,
    without one, as the bytes stream in (before the form parser spools them to disk)."""

    def __init__(self, app, max_bytes: int = MAX_UPLOAD) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def sending(message):
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = (f"Upload too large: at most {self.max_bytes // (1024 * 1024)} MB. A MyAnimeList export (.xml.gz) "
                f"is far smaller; upload it as MAL gives it.").encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class Busy(Exception):
    """More queries are waiting than the server queues."""


_SERVICE = None  # the service a forked worker process answers with (set before the workers fork)


def _answer(query):
    return _SERVICE.answer(query)


def parse_upload(name: str, data: bytes):
    """An uploaded list, read from a temporary file; errors name the upload, not the temporary path."""

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return read_list(path)
        except UserError as err:
            raise UserError(str(err).replace(str(path), name)) from None


class WorkLimit:
    """At most ``workers`` CPU-heavy queries at once, ``queue`` more waiting; beyond that :class:`Busy` (the
    page answers HTTP 503 with Retry-After). The work runs in worker threads, or with ``executor`` (a pool of
    processes forked after the model is loaded) in other processes, so it never holds the server's GIL."""

    def __init__(self, workers: int, queue: int, executor=None) -> None:
        self.workers, self.queue = max(1, int(workers)), max(0, int(queue))
        self.executor = executor
        self._slots: asyncio.Semaphore | None = None
        self.waiting = 0

    async def run(self, fn, *args):
        if self._slots is None:  # made inside the server's event loop
            self._slots = asyncio.Semaphore(self.workers)
        if self._slots.locked() and self.waiting >= self.queue:
            raise Busy()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            if self.executor is not None:
                return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
            return await run_in_threadpool(fn, *args)
        finally:
            self._slots.release()


TEMPLATES = "templates"  # animerec/templates/: the page (Jinja2) and its static files, as files

ANIME_COLUMNS = ("title", "reason", "type", "episodes", "genres", "mal_score", "members")
LABELS = {"title": "Title", "reason": "Why", "predicted_rating": "Predicted rating", "mean_rating": "Their mean rating",
          "type": "Type", "episodes": "Episodes", "genres": "Genres", "mal_score": "MAL score", "members": "Members",
          "user_id": "User", "similarity": "Similarity", "rating_count": "Ratings"}


def anime_rows(rows: list[dict]) -> dict:
    """A results table: title (linked to MyAnimeList), why, a meaningful score if any, then the catalogue columns."""
    scores = [c for c in SCORE_COLUMNS if rows and c in rows[0]]
    columns = [*ANIME_COLUMNS[:2], *scores, *ANIME_COLUMNS[2:]]
    return {"columns": columns, "labels": [LABELS.get(c, c) for c in columns], "rows": rows}


def create_app(service, model_path: Path | None = None, model_ref: str = "model", *, workers: int | None = None,
               queue: int = 32, max_upload: int = MAX_UPLOAD, processes: bool = False) -> FastAPI:
    """The FastAPI app serving ``service`` (a :class:`RecommendationService`); ``workers`` queries run at once
    (default: the cores) in threads, or with ``processes`` in forked worker processes; ``queue`` more wait;
    uploads over ``max_upload`` bytes are refused."""

    template = Environment(loader=PackageLoader("animerec", TEMPLATES),
                           autoescape=select_autoescape(default=True)).get_template("page.html")
    genres = sorted(Catalogue.from_bundle(service.bundle).known_genres.values())
    app = FastAPI(title="anime recommender", docs_url=None, redoc_url=None)
    app.add_middleware(UploadLimit, max_bytes=max_upload)
    workers = workers or os.cpu_count() or 2
    executor = None
    if processes:
        global _SERVICE
        _SERVICE = service  # the forked workers inherit the loaded model (copy-on-write: not copied)
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        list(executor.map(abs, range(workers)))  # fork them now, before the server starts its threads

        @app.on_event("shutdown")
        def stop_workers() -> None:  # Ctrl-C or SIGTERM: the worker processes end with the server
            executor.shutdown(wait=True, cancel_futures=True)
    limit = WorkLimit(workers, queue, executor)
    answer_fn = _answer if processes else service.answer
    busy = ("The server is busy answering other queries; try again in a few seconds.")

    def page(title: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("chosen", {})
        chosen = context["chosen"]
        chosen.setdefault("genres", [])
        chosen.setdefault("types", [])
        html = template.render(title=title, page=context.pop("page", "home"), genres=genres, types=TYPES,
                               tables=context.pop("tables", []), **context)
        return HTMLResponse(html, status_code=status)

    def query_from(form, kind: str) -> dict:
        chosen = {"genres": form.getlist("genres"), "types": form.getlist("types"),
                  "min_score": form.get("min_score") or None, "max_score": form.get("max_score") or None,
                  "sequels": form.get("sequels") or DEFAULT_SEQUELS, "adult": form.get("adult") == "on",
                  "min_members": form.get("min_members") or None,
                  "popularity_damping": form.get("popularity_damping") or 0.0,
                  "exclude": form.get("exclude") or "",
                  "n": form.get("n") or 10}
        return {"kind": kind, **chosen}

    async def answer(request: Request, kind: str, form, extra: dict, chosen: dict) -> HTMLResponse:
        query = {**query_from(form, kind), **extra}
        chosen = {**query, **chosen}
        form_id = FORMS[kind]
        try:
            result = await limit.run(answer_fn, query)  # in a worker: the event loop stays free
        except Busy:
            response = page("Anime recommender", 503, error=busy, chosen=chosen, form_id=form_id)
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        except UserError as err:
            return page("Anime recommender", 400, error=str(err), chosen=chosen, form_id=form_id)
        except Exception:  # noqa: BLE001 - a page, never a stack trace
            logger.exception("Query %s failed", {k: v for k, v in query.items() if k != "ratings"})
            return page("Anime recommender", 500, error="Something went wrong answering this query; the server "
                                                         "log has the details.", chosen=chosen, form_id=form_id)
        tables, summary = [], None
        asked = result["query"]
        if "list" in asked:
            listed = asked["list"]
            summary = (f"{listed['source']}: {listed['listed']} anime listed, {listed['used']} rated ones used"
                       + (f", {listed['skipped']} unknown to the model skipped" if listed["skipped"] else "")
                       + ". Nothing on it is recommended back.")
        if kind == "similar_anime":
            heading = f"Anime similar to {asked['title']} (MAL {asked['anime_id']})"
            tables.append({"id": "results", "caption": "", **anime_rows(result["anime"])})
        elif kind == "similar_users":
            who = "this list" if "list" in asked else f"user {asked['user_id']}"
            heading = f"Users most similar to {who}"
            columns = list(result["users"][0]) if result["users"] else []
            tables.append({"id": "users", "caption": "", "columns": columns, "labels": [LABELS.get(c, c) for c in columns],
                           "rows": result["users"]})
            tables.append({"id": "results", "caption": f"Anime they love that {who} has not rated",
                           **anime_rows(result["anime"])})
            summary = "Favourite genres: " + (", ".join(f"{g} {c}" for g, c in result["genres"].items()) or "none")
        else:
            heading = "Recommended for " + ("you" if "list" in asked else f"user {asked['user_id']}")
            tables.append({"id": "results", "caption": "", **anime_rows(result["anime"])})
        return page(heading, heading=heading, summary=summary, tables=tables, chosen=chosen, form_id=form_id)

    @app.get("/", response_class=HTMLResponse)
    async def home(tab: str = "similar-anime"):
        return page("Anime recommender", tab=tab if tab in FORMS.values() else "similar-anime")

    @app.get("/similar-anime", response_class=HTMLResponse)
    async def similar_anime(request: Request):
        form = request.query_params
        title = (form.get("title") or "").strip()
        if not title:
            return page("Anime recommender", 400, error="Type a title first.")
        return await answer(request, "similar_anime", form, {"query": title}, {"title": title})  # "86" is a title

    @app.get("/similar-users", response_class=HTMLResponse)
    async def similar_users(request: Request):
        form = request.query_params
        return await answer(request, "similar_users", form, {"query": form.get("user_id")},
                            {"user_id": form.get("user_id")})

    @app.post("/recommend", response_class=HTMLResponse)
    async def recommend(request: Request):
        form = await request.form()
        upload = form.get("ratings_file")
        likes = [line.strip() for line in (form.get("likes") or "").splitlines() if line.strip()]
        chosen = {"likes": form.get("likes") or ""}
        state = form.get("list_state") or ""
        if not (upload is not None and getattr(upload, "filename", "")) and not likes and state:
            # the uploaded list, kept in the page (rerunning without an anime the person is not interested in)
            try:
                listed = from_records(json.loads(state), form.get("list_name") or "your list")
            except (ValueError, UserError) as err:
                return page("Anime recommender", 400, error=f"The page's saved list is unreadable ({err}); upload "
                                                            f"your list again.", chosen=chosen, form_id="recommend")
            listed = dataclasses.replace(listed, source=form.get("list_name") or "your list")
            return await answer(request, "rating_recs", form, {"ratings": listed},
                                {**chosen, "list_state": state, "list_name": listed.source})
        if upload is not None and getattr(upload, "filename", ""):
            data = await upload.read(MAX_BYTES + 1)
            name = Path(upload.filename).name

            try:
                listed = await limit.run(parse_upload, name, data)  # parsing a big export is CPU work too
            except Busy:
                response = page("Anime recommender", 503, error=busy, chosen=chosen, form_id="recommend")
                response.headers["Retry-After"] = str(RETRY_AFTER_S)
                return response
            except UserError as err:
                return page("Anime recommender", 400, error=str(err), chosen=chosen, form_id="recommend")
            listed = dataclasses.replace(listed, source=name)
            return await answer(request, "rating_recs", form, {"ratings": listed},
                                {**chosen, "list_state": list_state(listed), "list_name": name})
        if likes:
            return await answer(request, "rating_recs", form, {"likes": likes}, chosen)
        return page("Anime recommender", 400, error="Upload your MyAnimeList export or a ratings CSV, or type some "
                                                    "titles you like.", chosen=chosen, form_id="recommend")

    @app.get("/api/suggest")
    async def suggest(q: str = "", limit: int = 8):
        return JSONResponse(suggestions(service.titles, q, min(max(limit, 1), 20)))

    @app.get("/model", response_class=HTMLResponse)
    async def model_page():
        return page(f"Model {model_ref}", page="model", card=model_card(service.bundle, model_path))

    @app.get("/model/{name}.png")
    async def model_image(name: str):
        if name == "loss_curve" and model_path is not None and (model_path / "loss_curve.png").is_file():
            return Response((model_path / "loss_curve.png").read_bytes(), media_type="image/png")
        if name == "ratings":
            return Response(rating_histogram(service.bundle), media_type="image/png")
        return Response(status_code=404)

    return app


def list_state(listed) -> str:
    """An uploaded list as JSON records, kept in the page so that a rerun needs no second upload."""
    dropped = listed.dropped if listed.dropped is not None else np.zeros(len(listed), bool)
    return json.dumps([{"anime_id": int(a), "rating": None if r != r else float(r), "planned": bool(p),
                        "dropped": bool(d)} for a, r, p, d in zip(listed.anime_ids, listed.ratings, listed.planned,
                                                                  dropped)])


def suggestions(titles, query: str, limit: int) -> list[dict]:
    """Titles starting with what was typed (most popular first), then the closest fuzzy matches."""

    key = normalise(query)
    if len(key) < 2:
        return []
    found: dict[int, str] = {}
    starts = [i for i, k in enumerate(titles.keys) if k.startswith(key)]
    for position in sorted(starts, key=lambda i: -titles.members[i])[:limit]:
        found.setdefault(int(titles.ids[position]), titles.display[position])
    for match in titles.candidates(query, limit):
        if len(found) >= limit:
            break
        found.setdefault(int(match.anime_id), match.name)
    return [{"anime_id": anime_id, "title": title} for anime_id, title in list(found.items())[:limit]]


def model_card(bundle, model_path: Path | None) -> dict:
    """What the model page shows (``templates/page.html`` lays it out): the data's size, the test metrics next to
    the baselines and the valid ones, and whether there is a loss curve."""
    metrics = {}
    if model_path is not None and (model_path / "metrics.json").is_file():
        metrics = json.loads((model_path / "metrics.json").read_text(encoding="utf-8"))
    info, baselines = bundle.info, metrics.get("baselines", {})
    data = [("users", f"{len(bundle.user_ids):,}"), ("anime", f"{len(bundle.anime_ids):,}"),
            ("ratings", f"{len(bundle.ratings):,}"), ("model", info.get("model_name", "?")),
            ("ranking head", info.get("ranker") or "none"), ("trained on", info.get("trained_on", "?"))]
    rows = [(key, [metrics.get(key), baselines.get("popularity", {}).get(key), baselines.get("global_mean", {}).get(key),
                   metrics.get(f"valid_{key}")]) for key in ("rmse", "mae", "recall_at_10", "ndcg_at_10")]
    return {"data": data, "metrics": rows if metrics else [],
            "loss_curve": model_path is not None and (model_path / "loss_curve.png").is_file()}


def rating_histogram(bundle) -> bytes:
    counts = np.bincount(bundle.ratings["rating"].to_numpy().astype(int), minlength=11)[1:]
    buffer = io.BytesIO()
    with figure(buffer, figsize=(6, 3)) as (_fig, ax):
        ax.bar(np.arange(1, 11), counts, color="#2e6fba")
        ax.set_xticks(np.arange(1, 11))
        ax.set_xlabel("rating")
        ax.set_ylabel("ratings")
    return buffer.getvalue()


def serve(service, model_path: Path | None, model_ref: str, host: str = "127.0.0.1", port: int = 8080,
          processes: bool | None = None) -> None:
    """Serve the page; queries run in forked worker processes where the OS can fork (``processes`` None), so
    heavy uploads never hold the server's GIL, else in threads."""

    service.warm()  # the lazily built tables now, not on the first visitor's query (half a minute at full size)
    logger.warning("Serving %s on http://%s:%d (Ctrl-C stops)", model_ref, host, port)
    if processes is None:
        processes = "fork" in multiprocessing.get_all_start_methods()
    uvicorn.run(create_app(service, model_path, model_ref, processes=processes), host=host, port=port,
                log_level="warning")

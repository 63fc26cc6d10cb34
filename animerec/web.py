"""``animerec web``: a small web page over :class:`animerec.service.RecommendationService`.

The page answers the same queries as the CLI and the pyfunc server, so it shows the same
rows: similar anime for a title (with suggestions as you type), recommendations for anyone
(an uploaded MyAnimeList export or ratings CSV, or a few liked titles), similar users and
their favourites for a dataset user, all with the genre, type and score filters; and a model
page (data size, metrics next to the baselines, the loss curve and the rating histogram).

FastAPI (already under MLflow's scoring server) with one Jinja template: the routes on one
``APIRouter`` read the page's shared :class:`Site` through a dependency; the app's lifespan makes it
(and the worker processes, if any, which end with the server); one exception handler per error type
shows bad input on the page (HTTP 400), a full queue (503) or a failure (500), never a stack trace.
It binds to 127.0.0.1 unless told otherwise.

Under load: the CPU work of a query (reading an upload, folding it in, ranking) runs in worker
threads, never on the event loop, so title suggestions stay fast while lists are uploaded; at most
``workers`` such queries run at once and ``queue`` more wait, the rest get HTTP 503 with
``Retry-After``. An upload over :data:`MAX_UPLOAD` bytes is refused from its ``Content-Length``, or
as soon as that many bytes have streamed in, before anything is spooled to disk (HTTP 413).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import json
import logging
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from threadpoolctl import threadpool_limits

from animerec.config import TYPES, ItemFilter, filter_form
from animerec.errors import UserError
from animerec.online import Covers
from animerec.plots import figure
from animerec.profiles import MAX_BYTES, from_records, read_list
from animerec.recommenders import Catalogue
from animerec.service import KINDS
from animerec.titles import normalise
from animerec.view import Table, view

logger = logging.getLogger(__name__)

# the columns a fan reads, in order (raw model scores stay in the JSON answer, not on the page)
SCORE_COLUMNS = ("predicted_rating", "mean_rating")

MAX_UPLOAD = 16 * 1024 * 1024  # bytes of one request body: a gzipped MAL export of 20,000 anime is ~1 MB
RETRY_AFTER_S = 2
FORMS = {kind.name: kind.command for kind in KINDS.values()}  # kind -> tab


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


class Worker:
    """The service a forked worker process answers with. The pool's initializer gives it once, in each worker
    process (inherited through fork, not copied); the server process never sets it."""

    service = None

    @staticmethod
    def start(service) -> None:
        Worker.service = service

    @staticmethod
    def answer(query):
        return Worker.service.answer(query)


def fork_workers(service, workers: int) -> ProcessPoolExecutor:
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=Worker.start,
                                   initargs=(service,))
    list(executor.map(abs, range(workers)))  # fork them now, before the server starts its threads
    return executor


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
          "user_id": "User", "in_common": "In common with you", "rating_count": "Ratings"}
USER_COLUMNS = ("user_id", "in_common", "rating_count")  # the counts behind "in common" stay in the JSON answer


def anime_rows(rows: list[dict]) -> dict:
    """A results table: title (linked to MyAnimeList), why, a meaningful score if any, then the catalogue columns."""
    scores = [c for c in SCORE_COLUMNS if rows and c in rows[0]]
    columns = [*ANIME_COLUMNS[:2], *scores, *ANIME_COLUMNS[2:]]
    return {"columns": columns, "labels": [LABELS.get(c, c) for c in columns], "rows": rows}


BUSY = "The server is busy answering other queries; try again in a few seconds."


class Failed(Exception):
    """A query failed for a reason that is not the person's: the page says so, the log has the traceback."""


@dataclass
class Site:
    """What every route of the page shares: made once by the app's lifespan, read through :func:`site`."""

    service: Any
    model_path: Path | None
    model_ref: str
    limit: WorkLimit
    answer: Callable[[dict], dict]  # the service's, or one that runs in a forked worker process
    template: Any = field(repr=False, default=None)
    genres: list[str] = field(default_factory=list)
    covers: Callable[[list[int]], dict[int, str]] = field(default_factory=Covers)  # AniList's, by MAL ID
    images: dict[int, str] = field(default_factory=dict)  # the catalogue's own covers (2023 layout)
    adult: frozenset = frozenset()  # MAL IDs whose covers are never looked up

    def with_covers(self, tables: list[dict]) -> None:
        """Each anime row's ``cover``: the catalogue's image where its layout has one, else AniList's (one batched
        look-up per answer); none for adult anime, none when AniList cannot be asked."""
        rows = [row for table in tables if table["id"] != "users" for row in table["rows"]]
        ask = [row["anime_id"] for row in rows if row["anime_id"] not in self.images.keys() | self.adult]
        found = {**(self.covers(ask) if ask else {}), **self.images}
        for row in rows:
            row["cover"] = found.get(row["anime_id"])

    def page(self, title: str, status: int = 200, **context: Any) -> HTMLResponse:
        chosen = {"genres": [], "types": [], **context.pop("chosen", {})}
        html = self.template.render(title=title, page=context.pop("page", "home"), genres=self.genres, types=TYPES,
                                    tables=context.pop("tables", []), chosen=chosen, **context)
        return HTMLResponse(html, status_code=status)

    async def run(self, fn, *args):
        """``fn(*args)`` in a worker; a failure that is not the person's becomes :class:`Failed`."""
        try:
            return await self.limit.run(fn, *args)
        except (Busy, UserError):
            raise
        except Exception as err:  # noqa: BLE001 - a page, never a stack trace
            logger.exception("A query failed")
            raise Failed() from err


def site(request: Request) -> Site:
    return request.app.state.site


def create_app(service, model_path: Path | None = None, model_ref: str = "model", *, workers: int | None = None,
               queue: int = 32, max_upload: int = MAX_UPLOAD, processes: bool = False) -> FastAPI:
    """The FastAPI app serving ``service`` (a :class:`RecommendationService`); ``workers`` queries run at once
    (default: the cores) in threads, or with ``processes`` in forked worker processes; ``queue`` more wait;
    uploads over ``max_upload`` bytes are refused."""
    settings = dict(service=service, model_path=model_path, model_ref=model_ref,
                    workers=workers or os.cpu_count() or 2, queue=queue, processes=processes)
    app = FastAPI(title="anime recommender", docs_url=None, redoc_url=None,
                  lifespan=functools.partial(lifespan, **settings))
    app.add_middleware(UploadLimit, max_bytes=max_upload)
    app.include_router(router)
    app.add_exception_handler(UserError, on_user_error)
    app.add_exception_handler(Busy, on_busy)
    app.add_exception_handler(Failed, on_failure)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI, *, service, model_path, model_ref, workers: int, queue: int, processes: bool):
    """The page's shared state for the server's life; the worker processes (if any) end with the server."""
    executor = fork_workers(service, workers) if processes else None
    template = Environment(loader=PackageLoader("animerec", TEMPLATES),
                           autoescape=select_autoescape(default=True)).get_template("page.html")
    catalogue = Catalogue.from_bundle(service.bundle)
    frame = catalogue.frame.assign(image_url=catalogue.frame.get("image_url"))
    app.state.site = Site(service, model_path, model_ref, WorkLimit(workers, queue, executor),
                          Worker.answer if executor else service.answer, template,
                          sorted(catalogue.known_genres.values()),
                          images=dict(frame.dropna(subset=["image_url"])[["anime_id", "image_url"]].to_numpy().tolist()),
                          adult=frozenset(frame["anime_id"][catalogue.adult].tolist()))
    try:
        yield
    finally:
        if executor is not None:  # Ctrl-C or SIGTERM
            executor.shutdown(wait=True, cancel_futures=True)


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """The page the person was on, with their choices kept and the error above the form."""
    shown = getattr(request.state, "shown", {})
    return request.app.state.site.page("Anime recommender", status, error=message, chosen=shown.get("chosen", {}),
                                       form_id=shown.get("form_id"))


async def on_user_error(request: Request, err: UserError) -> HTMLResponse:
    return _error_page(request, 400, str(err))


async def on_busy(request: Request, _err: Busy) -> HTMLResponse:
    response = _error_page(request, 503, BUSY)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def on_failure(request: Request, _err: Failed) -> HTMLResponse:
    return _error_page(request, 500, "Something went wrong answering this query; the server log has the details.")


def query_from(form, kind: str) -> dict:
    """A query from the page's form: one control per :class:`ItemFilter` field, and n and exclude."""
    defaults, chosen = ItemFilter(), {}
    for name in ItemFilter.model_fields:
        control = filter_form(name)[0]
        if control == "list":
            chosen[name] = form.getlist(name)
        elif control == "bool":
            chosen[name] = form.get(name) == "on"
        else:
            chosen[name] = form.get(name) or getattr(defaults, name)
    return {"kind": kind, **chosen, "exclude": form.get("exclude") or "", "n": form.get("n") or 10}


async def answer(request: Request, web: Site, kind: str, form, extra: dict, chosen: dict) -> HTMLResponse:
    query = {**query_from(form, kind), **extra}
    request.state.shown = {"chosen": {**query, **chosen}, "form_id": FORMS[kind]}
    shown = view(await web.run(web.answer, query))  # in a worker: the event loop stays free
    tables = [{"id": t.id, "caption": t.caption, **_columns(t)} for t in shown.tables]
    await run_in_threadpool(web.with_covers, tables)
    return web.page(shown.heading, heading=shown.heading, summary=" ".join(shown.notes) or None, tables=tables,
                    **request.state.shown)


def _columns(table: Table) -> dict:
    if table.id == "users":
        columns = [c for c in USER_COLUMNS if table.rows and c in table.rows[0]]
        return {"columns": columns, "labels": [LABELS.get(c, c) for c in columns], "rows": table.rows}
    return anime_rows(table.rows)


router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def home(web: Annotated[Site, Depends(site)], tab: str = "similar-anime"):
    return web.page("Anime recommender", tab=tab if tab in FORMS.values() else "similar-anime")


@router.get("/similar-anime", response_class=HTMLResponse)
async def similar_anime(request: Request, web: Annotated[Site, Depends(site)]):
    form = request.query_params
    title = (form.get("title") or "").strip()
    if not title:
        raise UserError("Type a title first.")
    return await answer(request, web, "similar_anime", form, {"query": title}, {"title": title})  # "86" is a title


@router.api_route("/similar-users", methods=["GET", "POST"], response_class=HTMLResponse)
async def similar_users(request: Request, web: Annotated[Site, Depends(site)]):
    return await person_answer(request, web, "similar_users")


@router.post("/recommend", response_class=HTMLResponse)
async def recommend(request: Request, web: Annotated[Site, Depends(site)]):
    return await person_answer(request, web, "rating_recs")


async def person_answer(request: Request, web: Site, kind: str) -> HTMLResponse:
    """A query about a person, from the page's form: an uploaded list, a username, liked titles, the list kept in
    the page (a rerun) or, for similar users, a user ID of the training data."""
    form = await request.form() if request.method == "POST" else request.query_params
    upload = form.get("ratings_file")
    uploaded = upload is not None and getattr(upload, "filename", "")
    likes = [line.strip() for line in (form.get("likes") or "").splitlines() if line.strip()]
    username, site = (form.get("username") or "").strip(), "anilist" if form.get("site") == "anilist" else "mal"
    user_id = (form.get("user_id") or "").strip() if kind == "similar_users" else ""
    chosen = {"likes": form.get("likes") or "", "username": username, "site": site, "user_id": user_id}
    request.state.shown = {"chosen": chosen, "form_id": FORMS[kind]}
    if username and not uploaded:  # fetched (and cached) in a worker
        return await answer(request, web, kind, form, {f"{site}_user": username}, chosen)
    if uploaded:
        name = Path(upload.filename).name
        listed = await web.run(parse_upload, name, await upload.read(MAX_BYTES + 1))  # reading is CPU work too
        listed = dataclasses.replace(listed, source=name)
        chosen.update(list_state=list_state(listed), list_name=name)
    elif likes:
        return await answer(request, web, kind, form, {"likes": likes}, chosen)
    elif form.get("list_state"):  # the uploaded list, kept in the page (rerun without an anime not of interest)
        listed = saved_list(form.get("list_state"), form.get("list_name") or "your list")
        chosen.update(list_state=form.get("list_state"), list_name=listed.source)
    elif user_id:
        return await answer(request, web, kind, form, {"query": user_id}, chosen)
    else:
        raise UserError("Upload your MyAnimeList export or a ratings CSV, give your MyAnimeList or AniList username, "
                        "or type some titles you like" + (", or a user ID." if kind == "similar_users" else "."))
    return await answer(request, web, kind, form, {"ratings": listed}, chosen)


@router.get("/api/suggest")
async def suggest(web: Annotated[Site, Depends(site)], q: str = "", limit: int = 8):
    return JSONResponse(suggestions(web.service.titles, q, min(max(limit, 1), 20)))


@router.get("/model", response_class=HTMLResponse)
async def model_page(web: Annotated[Site, Depends(site)]):
    return web.page(f"Model {web.model_ref}", page="model", card=model_card(web.service.bundle, web.model_path))


@router.get("/model/{name}.png")
async def model_image(name: str, web: Annotated[Site, Depends(site)]):
    path = web.model_path
    if name == "loss_curve" and path is not None and (path / "loss_curve.png").is_file():
        return Response((path / "loss_curve.png").read_bytes(), media_type="image/png")
    if name == "ratings":
        return Response(rating_histogram(web.service.bundle), media_type="image/png")
    return Response(status_code=404)


def saved_list(state: str, name: str):
    """The list the page kept from an earlier upload."""
    try:
        listed = from_records(json.loads(state), name)
    except (ValueError, UserError) as err:
        raise UserError(f"The page's saved list is unreadable ({err}); upload your list again.") from None
    return dataclasses.replace(listed, source=name)


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
    starts = [i for i, k in enumerate(titles.keys) if k.startswith(key) and not titles.adult[i]]
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

    # One BLAS thread: the page's products are small, and OpenBLAS's extra threads spin on the other core after
    # each one, in the server and in every forked worker, taking the core another query's work needs.
    threadpool_limits(1, user_api="blas")
    service.warm()  # the lazily built tables now, not on the first visitor's query (half a minute at full size)
    logger.warning("Serving %s on http://%s:%d (Ctrl-C stops)", model_ref, host, port)
    if processes is None:
        processes = "fork" in multiprocessing.get_all_start_methods()
    uvicorn.run(create_app(service, model_path, model_ref, processes=processes), host=host, port=port,
                log_level="warning")

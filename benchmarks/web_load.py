"""`animerec web` under load, on 127.0.0.1 only: throughput, latency per kind, abuse inputs, server memory.

1. Starts ``animerec web`` (a separate process) on a free 127.0.0.1 port with a full-catalogue model:
   ``--model PATH`` (e.g. the model ``benchmarks/full_scale.py`` trained), or by default a synthetic
   bundle over all 17,562 anime of the 2020 catalogue (random embeddings, an EASE head and a taste
   index over 20,000 synthetic users; a minute or two to build).
2. Sends a bounded, seeded mix at concurrency 16: title suggestions, similar anime, and uploads of
   a 1,000-entry MyAnimeList export (.xml.gz). Prints requests/s, p50/p99 per kind and the count
   of non-2xx answers.
3. Times title suggestions alone, then while eight clients upload lists back to back.
4. Sends the bad inputs (gzip bomb, XML entity bomb, truncated gzip, binary junk, empty file, wrong
   columns, a 6 kB title, n = -5, a body over the upload limit) and checks each gets a 4xx and
   the server still answers.
5. Samples the server's RSS all along: start, peak and end.

Every request goes to 127.0.0.1; the loops are bounded in count and time.

    python benchmarks/web_load.py
    python benchmarks/web_load.py --model /tmp/animerec-full-scale/artifacts/model/v1 --requests 300
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
TIMEOUT_S = 60


def synthetic_model(folder: Path, users: int = 20_000, seed: int = 0) -> Path:
    """A model artifact over the whole 2020 catalogue: random 64-wide embeddings, EASE head, taste index."""
    import pandas as pd

    from animerec.bundle import write_bundle
    from animerec.data import demo
    from animerec.data.layouts import load_anime
    from animerec.ease import interaction_matrix as history_matrix
    from animerec.ranking import RankerData
    from animerec.taste.index import TasteIndex, content_matrix

    rng = np.random.default_rng(seed)
    anime = load_anime(demo.catalogue_path()).sort_values("anime_id").reset_index(drop=True)
    anime["anime_index"] = np.arange(len(anime))
    popularity = np.maximum(anime["members"].to_numpy(float), 10.0) ** 0.9
    counts = np.clip(rng.lognormal(4.0, 1.0, users).astype(int), 5, 1500)
    owner = np.repeat(np.arange(users), counts)
    picks = rng.choice(len(anime), size=len(owner), p=popularity / popularity.sum())
    ratings = pd.DataFrame({"user_index": owner, "anime_index": picks,
                            "rating": np.clip(rng.normal(7.5, 1.5, len(owner)).round(), 1, 10).astype(int)})
    ratings = ratings.drop_duplicates(["user_index", "anime_index"])
    ranker = RankerData(ratings, users, len(anime), relevance_threshold=8).ranker(300.0, 1.0)
    history = history_matrix(ratings.user_index, ratings.anime_index, users, len(anime))
    taste = TasteIndex(history, content=content_matrix(anime, len(anime)), item_weights={"cooc": 1.0, "content": 0.05})
    folder.mkdir(parents=True, exist_ok=True)
    write_bundle(folder, scorer_arrays={"kernel": np.array([[4.0]]), "bias": np.array([0.0]),
                                        "user_bias": np.zeros(users), "anime_bias": np.zeros(len(anime))},
                 user_emb=rng.normal(size=(users, 64)), anime_emb=rng.normal(size=(len(anime), 64)),
                 activation="sigmoid", user_ids=np.arange(users), anime_ids=anime["anime_id"].to_numpy(),
                 scale={"min": 1.0, "max": 10.0}, anime=anime, ratings=ratings, ranker=ranker, taste=taste)
    return folder


def mal_export(anime_ids: np.ndarray, rng: np.random.Generator, entries: int = 1000) -> bytes:
    chosen = rng.choice(anime_ids, size=min(entries, len(anime_ids)), replace=False)
    rows = "".join(f"<anime><series_animedb_id>{a}</series_animedb_id><my_score>{int(rng.integers(1, 11))}</my_score>"
                   f"<my_status>Completed</my_status></anime>" for a in chosen)
    return gzip.compress(f"<myanimelist><myinfo><user_name>load</user_name></myinfo>{rows}</myanimelist>".encode())


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode())
    for name, (filename, data) in files.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                announce: int | None = None):
        """``(status, seconds)``; status 0 when the connection failed. ``announce`` sends only the headers of a
        body of that many bytes (a refusal from Content-Length must come before any of it)."""
        started = time.perf_counter()
        connection = http.client.HTTPConnection(HOST, self.port, timeout=TIMEOUT_S)
        try:
            if announce is None:
                connection.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
            else:
                connection.putrequest(method, path)
                connection.putheader("Content-Type", content_type or "application/octet-stream")
                connection.putheader("Content-Length", str(announce))
                connection.endheaders()
            response = connection.getresponse()
            response.read()
            return response.status, time.perf_counter() - started
        except (OSError, http.client.HTTPException):
            return 0, time.perf_counter() - started
        finally:
            connection.close()

    def suggest(self, text: str):
        return self.request("GET", "/api/suggest?" + urllib.parse.urlencode({"q": text}))

    def similar(self, title: str, n: int = 10):
        return self.request("GET", "/similar-anime?" + urllib.parse.urlencode({"title": title, "n": n}))

    def upload(self, name: str, data: bytes, extra: dict | None = None):
        body, kind = multipart(extra or {}, {"ratings_file": (name, data)})
        return self.request("POST", "/recommend", body, kind)


class RssSampler(threading.Thread):
    """Samples the server's memory (MB) every ``every`` seconds until stopped: the proportional set size
    (PSS) of the server and its worker processes together, so pages they share are counted once."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self._stop_event = pid, every, [], threading.Event()

    def rss_mb(self) -> float:
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        total = 0.0
        for pid in [self.pid, *map(int, children)]:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                if pid == self.pid:
                    return float("nan")
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(self.rss_mb())
            time.sleep(self.every)

    def stop(self) -> None:
        self._stop_event.set()


def percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "n/a"
    ms = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.1f} ms p99 {np.percentile(ms, 99):.1f} ms (n={len(ms)})"


def start_server(model: Path, port: int, workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled"}  # BLAS threads as a user's server has them (web.serve sets 1)
    command = [sys.executable, "-m", "animerec.cli", "web", "--model", str(model), "--host", HOST, "--port", str(port),
               "--store", str(workdir / "artifacts")]
    log = open(workdir / "server.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    client, deadline = Client(port), time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}); see {workdir / 'server.log'}")
        if client.request("GET", "/api/suggest?q=na")[0] == 200:
            return server
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not answer within 300 s")


def bad_inputs(titles: list[str]) -> dict[str, tuple[str, bytes] | str]:
    bomb = gzip.compress(b"<myanimelist>" + b" " * (200 * 1024 * 1024) + b"</myanimelist>")
    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10))
              + ']><myanimelist><anime><series_title>&lol9;</series_title></anime></myanimelist>').encode()
    whole = gzip.compress(b"<myanimelist>" + b"<anime><series_animedb_id>1</series_animedb_id></anime>" * 500
                          + b"</myanimelist>")
    return {
        "gzip bomb": ("animelist.xml.gz", bomb),
        "XML entity bomb": ("animelist.xml", laughs),
        "truncated gzip": ("animelist.xml.gz", whole[: len(whole) // 2]),
        "binary junk": ("animelist.xml", np.random.default_rng(1).bytes(50_000)),
        "empty file": ("animelist.csv", b""),
        "wrong columns": ("ratings.csv", b"user,score\n1,9\n2,8\n"),
        "6 kB title": "x" * 6000,
        "n = -5": titles[0],
        "body over the upload limit": "17 MB announced",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model artifact folder (default: a synthetic full-catalogue one)")
    parser.add_argument("--requests", type=int, default=300, help="requests in the mixed run (default 300)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model is None:
            started = time.perf_counter()
            args.model = synthetic_model(work / "model")
            print(f"synthetic full-catalogue model built in {time.perf_counter() - started:.0f} s", flush=True)
        from animerec.bundle import ModelBundle

        bundle = ModelBundle.load(args.model)
        anime_ids = bundle.anime_ids
        popular = bundle.anime.sort_values("members", ascending=False)["name"].astype(str).head(200).tolist()
        print(f"model {args.model}: {len(anime_ids):,} anime, {len(bundle.user_ids):,} users", flush=True)
        del bundle
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        server = start_server(args.model, port, work)
        sampler = RssSampler(server.pid)
        sampler.start()
        client = Client(port)
        try:
            start_rss = sampler.rss_mb()
            # 1. the mixed run
            exports = [mal_export(anime_ids, rng) for _ in range(8)]
            kinds = rng.choice(["suggest", "similar", "upload"], size=args.requests, p=[0.5, 0.3, 0.2])

            def one(i: int):
                kind = kinds[i]
                if kind == "suggest":
                    title = popular[i % len(popular)]
                    return kind, *client.suggest(title[: 2 + i % 6])
                if kind == "similar":
                    return kind, *client.similar(popular[i % len(popular)])
                return kind, *client.upload("animelist.xml.gz", exports[i % len(exports)])

            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                results = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - started
            print(f"\n== mixed run: {args.requests} requests at concurrency {args.concurrency}")
            print(f"requests_per_s: {args.requests / wall:.1f}")
            for kind in ("suggest", "similar", "upload"):
                print(f"{kind}: {percentiles([s for k, _, s in results if k == kind])}")
            statuses = [status for _, status, _ in results]
            print(f"non_2xx: {sum(not 200 <= s < 300 for s in statuses)} (5xx: {sum(s >= 500 for s in statuses)}, "
                  f"503 busy: {statuses.count(503)}, failed connections: {statuses.count(0)})")
            # 2. suggestions alone, then while eight clients upload back to back
            alone = [client.suggest(popular[i % 50][:3])[1] for i in range(100)]
            print(f"\nsuggest_alone: {percentiles(alone)}")
            stop = threading.Event()
            upload_statuses: list[int] = []

            def uploader(k: int):
                while not stop.is_set():
                    upload_statuses.append(client.upload("animelist.xml.gz", exports[k])[0])

            threads = [threading.Thread(target=uploader, args=(k,), daemon=True) for k in range(8)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            during, deadline = [], time.monotonic() + 60
            while len(during) < 200 and time.monotonic() < deadline:
                during.append(client.suggest(popular[len(during) % 50][:3])[1])
                time.sleep(0.02)
            stop.set()
            for thread in threads:
                thread.join(TIMEOUT_S)
            print(f"suggest_during_8_uploads: {percentiles(during)}; uploads meanwhile: {len(upload_statuses)} "
                  f"({sum(s == 200 for s in upload_statuses)} ok, {upload_statuses.count(503)} busy 503)")
            # 3. bad inputs
            print("\n== bad inputs")
            all_4xx = True
            for name, value in bad_inputs(popular).items():
                if name == "6 kB title":
                    status, seconds = client.similar(value)
                elif name == "n = -5":
                    status, seconds = client.similar(value, n=-5)
                elif name == "body over the upload limit":  # refused from its Content-Length, before the body
                    status, seconds = client.request("POST", "/recommend", content_type="multipart/form-data; boundary=x",
                                                     announce=17 * 1024 * 1024)
                else:
                    status, seconds = client.upload(*value)
                alive = client.suggest("nar")[0] == 200
                all_4xx &= 400 <= status < 500 and alive
                print(f"{name}: HTTP {status} in {seconds * 1000:.0f} ms; server answers after: {alive}")
            print(f"bad_inputs_all_4xx_and_alive: {all_4xx}")
        finally:
            sampler.stop()
            sampler.join(2)
            end_rss = sampler.rss_mb()
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        samples = [s for s in sampler.samples if s == s]
        print(f"\nserver_pss_mb (the server and its worker processes): start {start_rss:.0f} "
              f"peak {max(samples):.0f} end {end_rss:.0f}")


if __name__ == "__main__":
    main()

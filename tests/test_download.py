"""The downloader against a real HTTP server on 127.0.0.1."""

import base64
import dataclasses
import functools
import hashlib
import http.server
import io
import json
import threading
import time
import zipfile

import pytest

from animerec.artifacts import ArtifactStore
from animerec.data import demo
from animerec.data.download import DownloadError, RetryPolicy, fetch, fetch_data_file, kaggle_file_url, safe_extract
from animerec.steps import STEPS
from tests.conftest import free_port

BODY = b"user_id,anime_id,rating\n" + b"".join(f"{i},{i % 50 + 1},{i % 10 + 1}\n".encode() for i in range(20000))
FAST = RetryPolicy(attempts=4, backoff_s=0.01, connect_timeout_s=2, read_timeout_s=5)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: dict = {}

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        count = Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        rng = self.headers.get("Range")
        Handler.hits.setdefault("ranges", []).append((self.path, rng))
        if self.path == "/ok.csv":
            self._send(200, BODY)
        elif self.path.startswith("/kaggle/datasets/download/owner/ds/"):  # Kaggle's API: basic auth
            token = "Basic " + base64.b64encode(b"fan:secret").decode()
            Handler.hits.setdefault("auth", []).append(self.headers.get("Authorization") == token)
            name = self.path.rsplit("/", 1)[1]
            if self.headers.get("Authorization") != token:
                self._send(401, b"unauthorised")
            else:
                self._send(200, demo.catalogue_path().read_bytes() if name == "anime.csv.gz" else BODY)
        elif self.path == "/flaky.csv":
            self._send(500, b"oops") if count == 1 else self._send(200, BODY)
        elif self.path == "/busy.csv":
            self._send(429, b"slow down", {"Retry-After": "1"}) if count == 1 else self._send(200, BODY)
        elif self.path == "/always500.csv":
            self._send(503, b"down")
        elif self.path == "/drop.csv":
            start = int(rng.split("=")[1].rstrip("-")) if rng else 0
            if count == 1:
                # Promise the whole body, send a third of it, close the connection.
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY[: len(BODY) // 3])
                self.wfile.flush()
                self.close_connection = True
                return
            part = BODY[start:]
            self._send(206 if start else 200, part, {"Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"})
        elif self.path == "/alwaysdrop.csv":  # promises the rest of the body, sends 100 KB of it, hangs up
            start = int(rng.split("=")[1].rstrip("-")) if rng else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
            self.send_header("Content-Length", str(len(BODY) - start))
            self.end_headers()
            self.wfile.write(BODY[start:start + 100_000][:max(0, len(BODY) - start - 1)])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/evil.zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("ok.csv", "a,b\n1,2\n")
                zf.writestr("../escape.csv", "a,b\n1,2\n")
            self._send(200, buf.getvalue())
        elif self.path == "/data.zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("inner/ratings.csv", BODY)
                zf.writestr("README.txt", "hello")
            self._send(200, buf.getvalue())
        else:
            self._send(404, b"not here")


@pytest.fixture
def server():
    Handler.hits = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_plain_200(server, tmp_path):
    path = fetch(f"{server}/ok.csv", tmp_path / "ok.csv", retry=FAST, progress=False)
    assert path.read_bytes() == BODY
    assert not list(tmp_path.glob("*.part"))


def test_404_is_a_clear_error_without_retries(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing.csv: HTTP 404"):
        fetch(f"{server}/missing.csv", tmp_path / "m.csv", retry=FAST, progress=False)
    assert Handler.hits["/missing.csv"] == 1
    assert not (tmp_path / "m.csv").exists()


def test_500_then_200_is_retried(server, tmp_path):
    path = fetch(f"{server}/flaky.csv", tmp_path / "f.csv", retry=FAST, progress=False)
    assert path.read_bytes() == BODY and Handler.hits["/flaky.csv"] == 2


def test_retry_after_is_honoured(server, tmp_path):
    started = time.monotonic()
    path = fetch(f"{server}/busy.csv", tmp_path / "b.csv", retry=FAST, progress=False)
    assert path.read_bytes() == BODY and Handler.hits["/busy.csv"] == 2
    assert time.monotonic() - started >= 0.9  # the server's 1 s, not FAST's 0.01 s backoff


def test_persistent_5xx_gives_up_with_message(server, tmp_path):
    with pytest.raises(DownloadError, match="gave up after 4 attempts.*HTTP 503"):
        fetch(f"{server}/always500.csv", tmp_path / "x.csv", retry=FAST, progress=False)
    assert not (tmp_path / "x.csv").exists()


def test_giving_up_says_whether_a_partial_file_is_kept(server, tmp_path):
    """A connection that keeps dropping: the error names the partial file a rerun resumes from; a URL that never
    answered (or one of another scheme) has none to name."""
    with pytest.raises(DownloadError, match=r"gave up after 2 attempts; last error: connection dropped after .*"
                                            r"the partial file .*a.csv.part \([0-9,]+ bytes\) is kept so a rerun"):
        fetch(f"{server}/alwaysdrop.csv", tmp_path / "a.csv", retry=dataclasses.replace(FAST, attempts=2),
              progress=False)
    with pytest.raises(DownloadError) as refused:
        fetch(f"http://127.0.0.1:{free_port()}/b.csv", tmp_path / "b.csv", retry=FAST, progress=False)
    assert "connection failed (ConnectionError). Check the address and your connection." in str(refused.value)
    assert "partial" not in str(refused.value)
    with pytest.raises(DownloadError, match=r"ftp://example.org/c.csv: unsupported URL scheme 'ftp'; use http"):
        fetch("ftp://example.org/c.csv", tmp_path / "c.csv", retry=FAST, progress=False)


def test_dropped_connection_resumes_with_range(server, tmp_path):
    path = fetch(f"{server}/drop.csv", tmp_path / "d.csv", retry=FAST, progress=False)
    assert path.read_bytes() == BODY
    ranges = [r for p, r in Handler.hits["ranges"] if p == "/drop.csv"]
    # The retry asks only for what is missing: from the bytes kept on disk (whole 64 KiB blocks).
    assert ranges[0] is None
    assert ranges[1] == f"bytes={(len(BODY) // 3) // (1 << 16) * (1 << 16)}-" and ranges[1] != "bytes=0-"


def test_sha256_pinning(server, tmp_path):
    good = hashlib.sha256(BODY).hexdigest()
    assert fetch(f"{server}/ok.csv", tmp_path / "a.csv", sha256=good, retry=FAST, progress=False).exists()
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(f"{server}/ok.csv", tmp_path / "b.csv", sha256="0" * 64, retry=FAST, progress=False)
    assert not (tmp_path / "b.csv").exists() and not (tmp_path / "b.csv.part").exists()


def test_zip_member_escaping_is_refused(server, tmp_path):
    target = tmp_path / "inside"
    with pytest.raises(DownloadError, match=r"member '\.\./escape.csv' would be written outside"):
        fetch_data_file(f"{server}/evil.zip", target, retry=FAST)
    assert not (tmp_path / "escape.csv").exists()
    assert not (target / "evil_unzipped" / "ok.csv").exists()  # nothing extracted from a bad archive


def test_zip_data_member_is_extracted(server, tmp_path):
    path = fetch_data_file(f"{server}/data.zip", tmp_path, retry=FAST)
    assert path.name == "ratings.csv" and path.read_bytes() == BODY


def test_file_url(tmp_path):
    source = tmp_path / "src.csv"
    source.write_bytes(BODY)
    path = fetch(source.as_uri(), tmp_path / "out" / "copy.csv")
    assert path.read_bytes() == BODY
    with pytest.raises(DownloadError, match="no such file"):
        fetch((tmp_path / "nope.csv").as_uri(), tmp_path / "x.csv")


def test_safe_extract_refuses_absolute_members(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("sub/ok.csv", "y")
        zf.writestr("/abs/evil.csv", "x")
    with pytest.raises(DownloadError, match="/abs/evil.csv"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "sub" / "ok.csv").exists()


def test_the_download_step_reads_urls_and_kaggle(server, config_factory, monkeypatch, tmp_path):
    """``data.source=url`` and ``data.source=kaggle`` through the download step, against a stand-in server: the
    files land in ``raw_anime`` / ``raw_ratings``; Kaggle gets the credentials from the environment or kaggle.json,
    and without any the step says where to put them and stores nothing."""
    import animerec.steps.data as step

    cfg = config_factory("data.source=url", f"data.anime_url={server}/ok.csv", f"data.ratings_url={server}/ok.csv")
    store = ArtifactStore(cfg.main.artifact_root)
    assert store.resolve(STEPS["download"](cfg)["raw_ratings"]).file("ok.csv").read_bytes() == BODY
    monkeypatch.setattr(step, "kaggle_file_url", functools.partial(kaggle_file_url, api=f"{server}/kaggle"))
    cfg = config_factory("data.source=kaggle", "data.kaggle_dataset=owner/ds", "data.kaggle_anime_file=anime.csv.gz",
                         "data.kaggle_ratings_file=ratings.csv")
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    with pytest.raises(DownloadError, match=r"needs Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or put "
                                            r"kaggle.json .* at .*kaggle/kaggle.json"):
        STEPS["download"](cfg)
    assert store.versions("raw_anime") == [1] and "auth" not in Handler.hits  # nothing fetched, nothing stored
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / "kaggle.json").write_text(json.dumps({"username": "fan", "key": "secret"}))
    refs = STEPS["download"](cfg)
    assert store.resolve(refs["raw_ratings"]).file("ratings.csv").read_bytes() == BODY
    assert store.resolve(refs["raw_anime"]).file("anime.csv.gz").read_bytes() == demo.catalogue_path().read_bytes()
    monkeypatch.setenv("KAGGLE_USERNAME", "fan")
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    with pytest.raises(DownloadError, match=r"HTTP 401 \(not authorised\)"):
        STEPS["download"](cfg)
    assert Handler.hits["auth"] == [True, True, False] and store.versions("raw_anime") == [1, 2]

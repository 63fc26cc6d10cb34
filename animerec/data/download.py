"""Getting the raw files: HTTP(S)/file URLs, Kaggle, local paths, or the embedded demo set.

HTTP downloads stream to ``<dest>.part`` with a progress bar; urllib3's ``Retry`` retries
connection errors and 429 / 5xx answers with exponential backoff (or the server's ``Retry-After``);
a body cut short is resumed with a ``Range`` request where the server allows it,
check an optional sha256, and are renamed into place only when complete. Zip archives are
extracted member by member, refusing any member whose path would land outside the target folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util.retry import Retry

from animerec.artifacts import sha256_file
from animerec.errors import UserError

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({500, 502, 503, 504, 429})
KAGGLE_API = "https://www.kaggle.com/api/v1"


class DownloadError(UserError, RuntimeError):
    """A file could not be fetched; the message names the URL and what to do."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``attempts`` requests per file at most, ``backoff_s`` doubling between them."""

    attempts: int = 5
    backoff_s: float = 1.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    methods: tuple[str, ...] = ("GET",)  # the requests it retries (AniList's queries are POSTs)

    @property
    def timeouts(self) -> tuple[float, float]:
        """``(connect, read)`` for requests' ``timeout``."""
        return self.connect_timeout_s, self.read_timeout_s

    def session(self) -> requests.Session:
        """A session whose requests urllib3 retries: connection errors, and 429 / 5xx answers
        (waiting what a ``Retry-After`` header asks, else the exponential backoff)."""
        retries = Retry(total=self.attempts - 1, backoff_factor=self.backoff_s, status_forcelist=RETRY_STATUS,
                        allowed_methods=frozenset(self.methods), respect_retry_after_header=True, raise_on_status=False)
        session = requests.Session()
        for prefix in ("http://", "https://"):
            session.mount(prefix, HTTPAdapter(max_retries=retries))
        return session


def part_path(url: str, dest: Path, part_dir: str | Path | None) -> Path:
    """Where the partial download of ``url`` lives: one name per URL, so reruns find it."""
    if part_dir is None:
        return dest.with_name(dest.name + ".part")
    folder = Path(part_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{dest.name}.part"


def filename_from_url(url: str) -> str:
    name = Path(unquote(urlparse(url).path)).name
    return name or "download"


def fetch(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    retry: RetryPolicy = RetryPolicy(),
    session: requests.Session | None = None,
    auth: tuple[str, str] | None = None,
    progress: bool = True,
    part_dir: str | Path | None = None,
) -> Path:
    """Download ``url`` (http, https or file) to ``dest`` and return ``dest``.

    ``dest`` only ever appears complete: data goes to a ``.part`` file first and is renamed once
    its size and sha256 check out. The part file lives in ``part_dir`` (default: beside ``dest``;
    give a folder on the same filesystem that outlives a failed attempt) and is kept when the
    download fails, so that the next run resumes it with a Range request.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(url, dest, part_dir)
    scheme = urlparse(url).scheme
    if scheme == "file" or scheme == "":
        source = Path(unquote(urlparse(url).path)) if scheme == "file" else Path(url)
        if not source.is_file():
            raise DownloadError(f"{url}: no such file.")
        shutil.copyfile(source, part)
        _finish(part, dest, sha256, url)
        return dest
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r}; use http(s):// or file://.")

    session = session or retry.session()
    drops = 0
    while True:  # urllib3 retries each request; a body cut short is resumed here with a Range request
        try:
            _fetch_once(session, url, part, retry, auth, progress)
            break
        except _Dropped as err:
            drops += 1
            if drops >= retry.attempts:
                raise _gave_up(url, retry.attempts, err, part) from None
            logger.warning("%s: %s; resuming (%d/%d)", url, err, drops, retry.attempts - 1)
    _finish(part, dest, sha256, url)
    return dest


class _Dropped(Exception):
    """The connection ended before the whole body came."""


def _gave_up(url: str, attempts: int, last_error: object, part: Path) -> DownloadError:
    kept = (f"; the partial file {part} ({part.stat().st_size:,} bytes) is kept so a rerun resumes"
            if part.exists() and part.stat().st_size else "")
    return DownloadError(f"{url}: gave up after {attempts} attempts; last error: {last_error}. "
                         f"Check the address and your connection{kept}.")


def _fetch_once(session, url, part: Path, retry: RetryPolicy, auth, progress: bool) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = session.get(url, stream=True, headers=headers, auth=auth,
                               timeout=(retry.connect_timeout_s, retry.read_timeout_s))
    except (requests.ConnectionError, requests.Timeout) as err:
        raise _gave_up(url, retry.attempts, f"connection failed ({type(err).__name__})", part) from None
    with response:
        if response.status_code == 416 and offset:
            # The part file already holds the whole body; a fresh request confirms nothing is left.
            part.unlink()
            raise _Dropped("range not satisfiable; restarting from the beginning")
        if response.status_code in RETRY_STATUS:
            raise _gave_up(url, retry.attempts, f"HTTP {response.status_code}", part)
        if response.status_code in (401, 403):
            raise DownloadError(f"{url}: HTTP {response.status_code} (not authorised). Check the credentials or the URL.")
        if response.status_code >= 400:
            raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason}. Check the URL.")
        if offset and response.status_code == 206:
            mode = "ab"
        else:
            mode, offset = "wb", 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        received = offset
        try:
            with open(part, mode) as fh, tqdm(
                total=expected, initial=offset, unit="B", unit_scale=True,
                desc=filename_from_url(url), disable=not progress, leave=False,
            ) as bar:
                for block in response.iter_content(chunk_size=1 << 16):
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as err:
            raise _Dropped(f"connection dropped after {received} bytes") from err
        if expected is not None and received < expected:
            raise _Dropped(f"connection dropped after {received} of {expected} bytes")


def _finish(part: Path, dest: Path, sha256: str | None, url: str) -> None:
    if sha256:
        actual = sha256_file(part)
        if actual.lower() != sha256.lower():
            part.unlink()
            raise DownloadError(
                f"{url}: sha256 mismatch (expected {sha256}, got {actual}). The file was not kept; "
                f"check the pinned hash or the URL."
            )
    os.replace(part, dest)


def safe_extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract a zip archive into ``target``, refusing members that would escape it."""
    archive, target = Path(archive), Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    extracted = []
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            destination = (target / member.filename).resolve()
            if destination != target and target not in destination.parents:
                raise DownloadError(
                    f"{archive}: member {member.filename!r} would be written outside {target}; "
                    f"refusing to extract this archive."
                )
        for member in zf.infolist():
            if member.is_dir():
                continue
            destination = (target / member.filename).resolve()
            destination.parent.mkdir(parents=True, exist_ok=True)
            tmp = destination.with_name(destination.name + ".part")
            with zf.open(member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, destination)
            extracted.append(destination)
    return extracted


def fetch_data_file(url: str, folder: Path, *, sha256: str | None = None, want: str | None = None,
                    auth: tuple[str, str] | None = None, retry: RetryPolicy = RetryPolicy(),
                    part_dir: str | Path | None = None) -> Path:
    """Fetch one data file into ``folder``; a zip is extracted and its (wanted) data file returned."""
    folder = Path(folder)
    downloaded = fetch(url, folder / filename_from_url(url), sha256=sha256, auth=auth, retry=retry, part_dir=part_dir)
    if not zipfile.is_zipfile(downloaded):
        return downloaded
    extract_dir = folder / (downloaded.stem + "_unzipped")
    members = safe_extract(downloaded, extract_dir)
    downloaded.unlink()
    data = [p for p in members if p.name.endswith((".csv", ".csv.gz", ".parquet"))]
    if want:
        data = [p for p in data if p.name == want] or data
    if len(data) != 1:
        raise DownloadError(
            f"{url}: the archive holds {len(data)} data files ({', '.join(p.name for p in data) or 'none'}); "
            f"name the one to use."
        )
    final = folder / data[0].name
    os.replace(data[0], final)
    shutil.rmtree(extract_dir, ignore_errors=True)
    return final


def kaggle_credentials() -> tuple[str, str]:
    """From KAGGLE_USERNAME/KAGGLE_KEY, else ~/.kaggle/kaggle.json (or $KAGGLE_CONFIG_DIR)."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return user, key
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if data.get("username") and data.get("key"):
            return data["username"], data["key"]
    raise DownloadError(
        "data.source=kaggle needs Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json "
        f"(from kaggle.com > Settings > API > Create New Token) at {config}. "
        "Or download the files yourself and use data.source=local."
    )


def kaggle_file_url(dataset: str, file_name: str, api: str = KAGGLE_API) -> str:
    """URL of one file of a dataset in Kaggle's public download API (``owner/slug``)."""
    if dataset.count("/") != 1:
        raise DownloadError(f"data.kaggle_dataset must look like owner/dataset-slug, got {dataset!r}.")
    return f"{api}/datasets/download/{dataset}/{file_name}"

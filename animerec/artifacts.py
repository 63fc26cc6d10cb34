"""The local artifact store every step reads from and writes to.

Layout: ``<root>/<name>/v<N>/`` holds an artifact's files plus ``manifest.json`` (file
sha256s, producing step, MLflow and W&B run ids, the config used). A version exists only once
its folder has been renamed into place with its manifest inside, so a crash never leaves a
version that looks complete. References: ``name``, ``name:latest``, ``name:v3``, ``name:<alias>``
(aliases such as ``best`` live in ``<root>/<name>/aliases.json``), or a path to a version folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

import numpy as np
from filelock import FileLock

from animerec.errors import UserError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ALIASES = "aliases.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ArtifactError(UserError, RuntimeError):
    """An artifact reference that cannot be resolved, or an artifact that cannot be written."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def copy_file(source: Path, target: Path) -> None:
    """Copy a file: a reflink (copy-on-write clone, instant and free) where the filesystem supports
    one (Btrfs, XFS, APFS-like), else a plain copy. Never a hard link."""
    source, target = Path(source), Path(target)
    try:
        import fcntl

        with open(source, "rb") as src, open(target, "wb") as dst:
            fcntl.ioctl(dst.fileno(), 0x40049409, src.fileno())  # FICLONE
        return
    except (OSError, ImportError, AttributeError):
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
    shutil.copyfile(source, target)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed) for the ``with`` block, on every OS (``filelock``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """The one atomic write: ``write(handle)`` fills a temporary file in ``path``'s folder, which is flushed
    to disk and renamed over ``path``. On any failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


_META = "__meta__"


class Arrays(dict):
    """Named arrays read from an array file, with its JSON ``meta`` (``{}`` when it has none)."""

    meta: dict


def write_arrays(path: Path, arrays: Mapping[str, Any], meta: dict | None = None) -> None:
    """The one array container (model parts, encoders, ratings, checkpoints): named arrays, None
    values left out, and an optional JSON ``meta``, in one ``.npz`` written atomically."""
    payload = {key: np.asarray(value) for key, value in arrays.items() if value is not None}
    if meta is not None:
        payload[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda handle: np.savez(handle, **payload))


def read_arrays(path: Path) -> Arrays:
    """Every array of a file :func:`write_arrays` wrote (or any ``.npz``), read and the file closed."""
    with np.load(path) as npz:
        out = Arrays({key: npz[key] for key in npz.files if key != _META})
        out.meta = json.loads(bytes(npz[_META]).decode("utf-8")) if _META in npz.files else {}
    return out


def project_version() -> str:
    """This release of animerec (``unknown`` when it is not installed)."""
    try:
        return version("animerec")
    except PackageNotFoundError:
        return "unknown"


class FormatError(UserError, ValueError):
    """A stored part written in a newer format than this release reads."""


def write_part(path: Path, arrays: Mapping[str, Any], kind: str, format_version: int, meta: dict | None = None) -> None:
    """A versioned stored part (ranking head, taste index, checkpoint): :func:`write_arrays` with its kind,
    format version and the release that wrote it in the meta."""
    write_arrays(path, arrays, {**(meta or {}), "part": kind, "format_version": int(format_version),
                                "written_by": project_version()})


def read_part(path: Path, kind: str, format_version: int) -> Arrays:
    """A part :func:`write_part` wrote; a :class:`FormatError` naming the release that wrote it when its format
    is newer than ``format_version`` (parts written before versions were stored count as version 1)."""
    arrays = read_arrays(path)
    found = int(arrays.meta.get("format_version", 1))
    if found > format_version:
        raise FormatError(f"{path} holds a {kind} of format version {found}, written by animerec "
                          f"{arrays.meta.get('written_by', '?')}; this release ({project_version()}) reads {kind}s "
                          f"up to version {format_version}. Upgrade animerec, or retrain with this release.")
    return arrays


@dataclass(frozen=True)
class ArtifactVersion:
    """One stored, complete version of an artifact."""

    name: str
    version: int
    path: Path
    manifest: dict = field(repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    @property
    def type(self) -> str:
        return self.manifest.get("type", "")

    @property
    def metadata(self) -> dict:
        return self.manifest.get("metadata", {})

    def file(self, relative: str) -> Path:
        """Path of one of the artifact's files; a clear error if the artifact lacks it."""
        path = self.path / relative
        if not path.exists():
            listed = ", ".join(sorted(self.manifest.get("files", {}))) or "none"
            raise ArtifactError(
                f"Artifact {self.ref} ({self.path}) has no file {relative!r}; it holds: {listed}. "
                f"Was it written by an older or different step?"
            )
        return path

    def check_sizes(self) -> None:
        """Every file the manifest lists is there with its recorded size (cheap: one stat each)."""
        for rel, info in self.manifest.get("files", {}).items():
            path = self.path / rel
            if not path.is_file():
                raise ArtifactError(
                    f"Artifact {self.ref} ({self.path}) is damaged: its file {rel} is missing. Rerun the step "
                    f"that produced it, or use another version."
                )
            size = path.stat().st_size
            if size != info["size"]:
                raise ArtifactError(
                    f"Artifact {self.ref} ({self.path}) is damaged: its file {rel} has {size} bytes, the manifest "
                    f"recorded {info['size']}. It was changed or truncated after it was written; rerun the step "
                    f"that produced it, or use another version."
                )

    def verify(self) -> None:
        """Check every file against the sha256 recorded in the manifest."""
        self.check_sizes()
        for rel, info in self.manifest.get("files", {}).items():
            actual = sha256_file(self.path / rel)
            if actual != info["sha256"]:
                raise ArtifactError(
                    f"Artifact {self.ref}: file {rel} does not match its manifest sha256 "
                    f"(expected {info['sha256'][:12]}…, found {actual[:12]}…); it was changed after it was written."
                )


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``name[:version_or_alias]`` into its name and version/alias (``latest`` if absent)."""
    name, _, tag = ref.partition(":")
    return name, (tag or "latest")


class ArtifactStore:
    """Versioned artifacts in a local folder, written atomically.

    Reading a version always checks that its files have the sizes its manifest records; with
    ``verify=True`` (``main.verify_artifacts``) their sha256 too.
    """

    def __init__(self, root: str | os.PathLike, *, verify: bool = False) -> None:
        self.root = Path(root).expanduser().resolve()
        self.verify = bool(verify)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    # reading -------------------------------------------------------------------------------
    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = []
        for child in folder.iterdir():
            match = _VERSION_DIR.match(child.name)
            if match and (child / MANIFEST).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def aliases(self, name: str) -> dict[str, int]:
        path = self.root / name / ALIASES
        if not path.is_file():
            return {}
        return {k: int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}

    def resolve(self, ref: str | os.PathLike) -> ArtifactVersion:
        """Resolve ``name``, ``name:latest``, ``name:vN``, ``name:<alias>`` or a version folder path."""
        text = str(ref)
        as_path = Path(text).expanduser()
        if (as_path / MANIFEST).is_file():
            return self._checked(self._load(as_path))
        name, tag = parse_ref(text)
        if not _NAME.match(name):
            raise ArtifactError(
                f"{text!r} is neither an artifact reference (name, name:latest, name:v3) nor a folder "
                f"holding a {MANIFEST}."
            )
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none yet"
            raise ArtifactError(
                f"No artifact named {name!r} in the store {self.root} (artifacts there: {known}). "
                f"Run the step that produces it first, or point main.artifact_root at the store that has it."
            )
        if tag == "latest":
            version = versions[-1]
        elif _VERSION_DIR.match(tag):
            version = int(tag[1:])
            if version not in versions:
                raise ArtifactError(
                    f"Artifact {name!r} has no version {tag} in {self.root}; versions: "
                    + ", ".join(f"v{v}" for v in versions)
                )
        else:
            aliases = self.aliases(name)
            if tag not in aliases:
                raise ArtifactError(
                    f"Artifact {name!r} has no alias {tag!r}; use latest, a version "
                    f"({', '.join(f'v{v}' for v in versions)}) or one of the aliases: {', '.join(aliases) or 'none'}."
                )
            version = aliases[tag]
        return self._checked(self._load(self.root / name / f"v{version}"))

    def _checked(self, version: ArtifactVersion) -> ArtifactVersion:
        if self.verify:
            version.verify()
        else:
            version.check_sizes()
        return version

    @classmethod
    def load_version(cls, path: Path) -> ArtifactVersion:
        """The version stored in the folder ``path`` (its manifest read; nothing checked yet)."""
        return cls._load(Path(path))

    @staticmethod
    def _load(path: Path) -> ArtifactVersion:
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            return ArtifactVersion(manifest["name"], int(manifest["version"]), path.resolve(), manifest)
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"{path / MANIFEST} is not a valid artifact manifest ({err}); the version is "
                                f"damaged. Delete {path} or rerun the step that produced it.") from None

    # writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def new_version(
        self,
        name: str,
        type: str,
        *,
        metadata: dict | None = None,
        producer: dict | None = None,
        config: dict | None = None,
    ) -> Iterator["PendingVersion"]:
        """Stage a new version; it becomes visible only if the ``with`` block ends without error.

        Files are written into ``pending.path`` (a hidden staging folder next to the versions).
        On success the manifest is written and the folder renamed to the next free ``vN``.
        """
        if not _NAME.match(name):
            raise ArtifactError(f"Invalid artifact name {name!r}: use letters, digits, '.', '_' and '-'.")
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        self.clean_orphans(name)
        staging = folder / f".staging-{os.getpid()}-{uuid.uuid4().hex}"
        staging.mkdir()
        pending = PendingVersion(name=name, type=type, path=staging, metadata=dict(metadata or {}))
        try:
            yield pending
            pending.version = self._commit(pending, producer or {}, config or {})
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a first write that failed leaves no trace
            raise

    def clean_orphans(self, name: str) -> list[Path]:
        """Remove the staging folders of ``name`` whose writing process is gone (killed mid-write)."""
        removed = []
        folder = self.root / name
        if not folder.is_dir():
            return removed
        for child in folder.iterdir():
            if child.name.startswith(".staging-"):
                pid = child.name.split("-")[1]
                if pid.isdigit() and _pid_alive(int(pid)):
                    continue
                if not pid.isdigit() and time.time() - child.stat().st_mtime < 24 * 3600:
                    continue  # an older layout's folder: only once it is a day old
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
        if removed:
            logger.info("Removed %d unfinished staging folder(s) of %s left by stopped runs", len(removed), name)
        return removed

    def _commit(self, pending: "PendingVersion", producer: dict, config: dict) -> ArtifactVersion:
        files = {}
        for path in sorted(p for p in pending.path.rglob("*") if p.is_file()):
            rel = path.relative_to(pending.path).as_posix()
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        if not files:
            raise ArtifactError(f"Refusing to store an empty artifact {pending.name!r}: the step wrote no files.")
        folder = pending.path.parent
        while True:
            # Reserve the next number with an empty folder, so that concurrent writers pick different ones.
            taken = [int(m.group(1)) for p in folder.iterdir() if (m := _VERSION_DIR.match(p.name))]
            version = max(taken, default=0) + 1
            target = folder / f"v{version}"
            try:
                target.mkdir()
                break
            except FileExistsError:
                continue
        manifest = {
            "name": pending.name,
            "version": version,
            "type": pending.type,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files,
            "metadata": pending.metadata,
            "producer": producer,
            "config": config,
        }
        atomic_write_json(pending.path / MANIFEST, manifest)
        os.rename(pending.path, target)  # replaces the empty reserved folder in one step
        logger.info("Stored artifact %s:v%d (%d files) in %s", pending.name, version, len(files), target)
        return self._load(target)

    def update_manifest(self, version: ArtifactVersion, **fields: Any) -> ArtifactVersion:
        """Add fields (e.g. the W&B artifact name once it is known) to a stored manifest, atomically."""
        manifest = dict(version.manifest)
        manifest.update(fields)
        atomic_write_json(version.path / MANIFEST, manifest)
        return self._load(version.path)

    def lock(self, name: str):
        """Exclusive lock for read-modify-write of ``name``'s aliases (``with store.lock("model"):``)."""
        return file_lock(self.root / name / ".aliases.lock")

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``name:alias`` at a version: locked, and written to a temporary file then renamed."""
        if alias == "latest" or _VERSION_DIR.match(alias):
            raise ArtifactError(f"{alias!r} cannot be used as an alias: it is a reserved version name.")
        if version not in self.versions(name):
            raise ArtifactError(f"Cannot alias {name}:v{version}: no such version in {self.root}.")
        with self.lock(name):
            self.write_alias(name, alias, version)

    def write_alias(self, name: str, alias: str, version: int) -> None:
        """The write itself; call it holding :meth:`lock`."""
        aliases = self.aliases(name)
        aliases[alias] = version
        atomic_write_json(self.root / name / ALIASES, aliases)


@dataclass
class PendingVersion:
    """A version being written: put files under ``path``; ``version`` is set once committed."""

    name: str
    type: str
    path: Path
    metadata: dict
    version: ArtifactVersion | None = None

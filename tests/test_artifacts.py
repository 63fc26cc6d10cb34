import json
import os

import numpy as np
import pytest

from animerec.artifacts import ArtifactError, ArtifactStore, read_arrays, write_arrays


def write(store, name="thing", text="x", **kw):
    with store.new_version(name, "raw_data", **kw) as pending:
        (pending.path / "a.txt").write_text(text)
    return pending.version


def test_versions_count_up_and_resolve(tmp_path):
    store = ArtifactStore(tmp_path)
    v1, v2 = write(store, text="one"), write(store, text="two")
    assert (v1.version, v2.version) == (1, 2)
    assert store.resolve("thing").version == 2
    assert store.resolve("thing:latest").version == 2
    assert store.resolve("thing:v1").file("a.txt").read_text() == "one"
    assert store.resolve(str(v1.path)).version == 1
    manifest = json.loads((v2.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"a.txt"} and len(manifest["files"]["a.txt"]["sha256"]) == 64
    v2.verify()


def test_failed_write_leaves_no_version(tmp_path):
    store = ArtifactStore(tmp_path)
    write(store)
    with pytest.raises(RuntimeError, match="boom"):
        with store.new_version("thing", "raw_data") as pending:
            (pending.path / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert store.versions("thing") == [1]
    assert [p.name for p in (tmp_path / "thing").iterdir()] == ["v1"]


def test_empty_artifact_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="empty artifact"):
        with store.new_version("thing", "raw_data"):
            pass
    assert store.versions("thing") == []


def test_aliases_and_clear_errors(tmp_path):
    store = ArtifactStore(tmp_path)
    write(store), write(store)
    store.set_alias("thing", "best", 1)
    assert store.resolve("thing:best").version == 1
    with pytest.raises(ArtifactError, match="no version v7"):
        store.resolve("thing:v7")
    with pytest.raises(ArtifactError, match="No artifact named 'other'.*thing"):
        store.resolve("other:latest")
    with pytest.raises(ArtifactError, match="no alias 'nope'.*best"):
        store.resolve("thing:nope")
    with pytest.raises(ArtifactError, match="reserved"):
        store.set_alias("thing", "latest", 1)
    with pytest.raises(ArtifactError, match=r"Cannot alias thing:v9: no such version"):
        store.set_alias("thing", "best", 9)
    with pytest.raises(ArtifactError, match=r"'no such/place' is neither an artifact reference .* nor a folder"):
        store.resolve("no such/place")
    with pytest.raises(ArtifactError, match=r"Invalid artifact name '../up': use letters, digits"):
        write(store, name="../up")
    (tmp_path / "thing" / "v2" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"v2/manifest.json is not a valid artifact manifest .*Delete .*v2"):
        store.resolve("thing:v2")
    assert store.resolve("thing:best").version == 1  # the other versions still read


def test_reading_checks_sizes_always_and_sha256_when_asked(tmp_path):
    write(ArtifactStore(tmp_path), text="abc")
    version = ArtifactStore(tmp_path).resolve("thing:v1")
    (version.path / "a.txt").write_text("xyz")  # same size: only the sha256 can tell
    assert ArtifactStore(tmp_path).resolve("thing:v1").version == 1
    with pytest.raises(ArtifactError, match=r"a.txt does not match its manifest sha256"):
        ArtifactStore(tmp_path, verify=True).resolve("thing:v1")
    (version.path / "a.txt").write_text("longer")  # a size change is caught on every read
    with pytest.raises(ArtifactError, match=r"thing:v1 .* is damaged: its file a.txt has 6 bytes, the manifest recorded 3"):
        ArtifactStore(tmp_path).resolve("thing")
    (version.path / "a.txt").unlink()
    with pytest.raises(ArtifactError, match=r"is damaged: its file a.txt is missing"):
        ArtifactStore(tmp_path).resolve(str(version.path))


def test_orphaned_staging_of_a_killed_process_is_cleaned(tmp_path):
    import subprocess
    import sys

    store = ArtifactStore(tmp_path)
    write(store)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / "thing" / f".staging-{dead.stdout.strip()}-0123abcd"
    orphan.mkdir()
    (orphan / "half.bin").write_bytes(b"12")
    alive = tmp_path / "thing" / f".staging-{os.getpid()}-feedbeef"  # a writer still at work: kept
    alive.mkdir()
    old_layout = tmp_path / "thing" / ".staging-abc"  # no writer's pid in the name: removed once a day old
    old_layout.mkdir()
    assert write(store).version == 2
    assert not orphan.exists() and alive.exists() and old_layout.exists()
    os.utime(old_layout, (0, 0))
    assert write(store).version == 3 and not old_layout.exists()


def test_alias_updates_are_locked(tmp_path):
    """Two processes moving aliases at once: every update lands, and aliases.json stays valid JSON."""
    import multiprocessing

    store = ArtifactStore(tmp_path)
    for _ in range(3):
        write(store)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.starmap(_set_many, [(str(tmp_path), f"a{worker}") for worker in range(4)])
    aliases = store.aliases("thing")
    assert {f"a{w}-{i}" for w in range(4) for i in range(25)} <= set(aliases)


def _set_many(root, prefix):
    store = ArtifactStore(root)
    for i in range(25):
        store.set_alias("thing", f"{prefix}-{i}", 1 + i % 3)


def test_missing_file_names_the_artifact(tmp_path):
    version = write(ArtifactStore(tmp_path))
    with pytest.raises(ArtifactError, match=r"thing:v1.*no file 'model.keras'.*a.txt"):
        version.file("model.keras")


def test_array_container_round_trip_and_atomic_replace(tmp_path, monkeypatch):
    path = tmp_path / "part.npz"
    write_arrays(path, {"a": np.arange(3, dtype=np.int32), "skipped": None}, meta={"epochs": 2})
    first = read_arrays(path)
    assert list(first) == ["a"] and first["a"].dtype == np.int32 and first.meta == {"epochs": 2}

    def half_then_fail(handle, **arrays):
        handle.write(b"PK half an npz")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_arrays(path, {"b": np.zeros(2)})
    monkeypatch.undo()
    again = read_arrays(path)
    assert list(again) == ["a"] and again.meta == {"epochs": 2}  # the last complete write, never half of one
    assert [p.name for p in tmp_path.iterdir()] == ["part.npz"]


def test_a_newer_part_is_refused_naming_the_release_that_wrote_it(tmp_path):
    from animerec.artifacts import FormatError, read_part, write_part

    write_part(tmp_path / "head.npz", {"x": np.arange(3)}, "ranker", 2)
    again = read_part(tmp_path / "head.npz", "ranker", 2)
    assert again.meta["format_version"] == 2 and again.meta["part"] == "ranker" and "written_by" in again.meta
    write_part(tmp_path / "newer.npz", {"x": np.arange(3)}, "ranker", 3, {"written_by": "ignored"})
    meta = read_part(tmp_path / "newer.npz", "ranker", 3).meta
    with pytest.raises(FormatError, match=r"format version 3, written by animerec .*reads rankers up to version 2.*Upgrade"):
        read_part(tmp_path / "newer.npz", "ranker", 2)
    assert meta["written_by"] != "ignored"  # the release is always this one's
    np.savez(tmp_path / "old.npz", x=np.arange(2))  # written before parts carried versions: version 1
    assert list(read_part(tmp_path / "old.npz", "ranker", 1)["x"]) == [0, 1]


def test_an_older_release_refuses_a_newer_checkpoint(tmp_path, monkeypatch):
    from animerec.artifacts import FormatError
    from animerec.checkpoint import EpochCheckpoint, TrainingState

    checkpoint = EpochCheckpoint(tmp_path / "c.npz")
    checkpoint.save(TrainingState(epochs_done=1, weights=[np.zeros(2)], optimizer=[], best=1.0, best_epoch=1,
                                  best_weights=None, waited=0, history=[], stopped=False))
    assert checkpoint.load().epochs_done == 1
    monkeypatch.setattr(EpochCheckpoint, "FORMAT_VERSION", 0)  # an older release's reader
    with pytest.raises(FormatError, match="holds a checkpoint of format version 1"):
        checkpoint.load()

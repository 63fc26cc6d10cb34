import json

import pytest

from animerec.artifacts import ArtifactError, ArtifactStore


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


def test_tampered_file_fails_verification(tmp_path):
    version = write(ArtifactStore(tmp_path))
    (version.path / "a.txt").write_text("changed")
    with pytest.raises(ArtifactError, match="does not match"):
        version.verify()


def test_missing_file_names_the_artifact(tmp_path):
    version = write(ArtifactStore(tmp_path))
    with pytest.raises(ArtifactError, match=r"thing:v1.*no file 'model.keras'.*a.txt"):
        version.file("model.keras")

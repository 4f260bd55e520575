"""artifacts: publish protocol, path grammar, containment, modes, and the verified load path."""
from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from ambidex.artifacts import ArtifactStore, check_name, check_relpath, check_version, sha256_file
from ambidex.errors import ArtifactError

from .conftest import write_model


def _publish(store: ArtifactStore, src: Path, name="churn", version=1) -> dict:
    """Stage, complete and publish like the registry does; return the completed manifest."""
    staging, files = store.stage_folder(src)
    manifest = {**json.loads((src / "model.json").read_text()), "version": version, "files": files}
    store.write_file(staging, "model.json", json.dumps(manifest).encode())
    path = store.publish(staging, name, version)
    return {"path": path, "manifest": manifest}


@pytest.fixture
def umask_000():
    old = os.umask(0)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_publish_sets_modes_whatever_the_umask(tmp_path, umask_000):
    store = ArtifactStore(tmp_path / "store")
    src = write_model(tmp_path / "src", extra={"plots/roc.png": b"png"})
    staging = store.new_staging()
    assert _mode(staging) == 0o700
    store.discard(staging)
    mv = _publish(store, src)
    folder = store.root / mv["path"]
    assert mv["path"] == "models/churn/1" and folder.is_dir()
    for p in [folder, folder / "plots", store.root / "models" / "churn"]:
        assert _mode(p) == 0o750, p
    for p in [folder / "model.joblib", folder / "plots" / "roc.png", folder / "model.json"]:
        assert _mode(p) == 0o640, p
    assert set(mv["manifest"]["files"]) == {"model.joblib", "plots/roc.png"}
    assert mv["manifest"]["files"]["plots/roc.png"] == {"sha256": sha256_file(folder / "plots/roc.png")[0], "size": 3}
    assert list((store.root / ".staging").iterdir()) == []
    blob = store.put_blob(folder / "plots" / "roc.png")
    assert _mode(store.root / blob["relpath"]) == 0o640 and _mode((store.root / blob["relpath"]).parent) == 0o750


def test_publish_never_overwrites_a_version(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    _publish(store, write_model(tmp_path / "a"))
    staging, _ = store.stage_folder(write_model(tmp_path / "b"))
    with pytest.raises(ArtifactError) as e:
        store.publish(staging, "churn", 1)
    assert e.value.code == "artifact.conflict"


@pytest.mark.parametrize("name", ["", "Churn", "../etc", "%2e%2e", "a/b", "churn%00", "1abc", "a" * 64, None])
def test_model_name_grammar(name):
    with pytest.raises(ArtifactError) as e:
        check_name(name)
    assert e.value.code == "artifact.path_escape"


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../b", "%2e%2e/x", "%252e%252e%252fx", "a\\b",
                                 "a//b", "./a", "", "a/\x00b", "x" * 600])
def test_relpath_grammar(rel):
    with pytest.raises(ArtifactError):
        check_relpath(rel)


@pytest.mark.parametrize("v", [0, -1, True, "01", "1.0", "%31", 1.0, "1/../2"])
def test_version_grammar(v):
    with pytest.raises(ArtifactError):
        check_version(v)


def test_valid_paths_pass():
    assert check_name("churn_v2-eu") == "churn_v2-eu"
    assert check_version("12") == 12 and check_version(3) == 3
    assert check_relpath("plots/roc curve.png") == "plots/roc curve.png"


def test_symlink_in_source_folder_is_refused(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    src = write_model(tmp_path / "src")
    (src / "secrets").symlink_to("/etc/passwd")
    with pytest.raises(ArtifactError, match="symlink") as e:
        store.stage_folder(src)
    assert e.value.code == "artifact.path_escape"
    assert list((store.root / ".staging").iterdir()) == []


def test_planted_symlink_pointing_outside_is_refused(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    mv = _publish(store, write_model(tmp_path / "src"))
    payload = store.root / mv["path"] / "model.joblib"
    outside = tmp_path / "outside.joblib"
    outside.write_bytes(payload.read_bytes())  # same bytes, so only containment can catch it
    payload.unlink()
    payload.symlink_to(outside)
    with pytest.raises(ArtifactError) as e:
        store.verified_path(mv)
    assert e.value.code == "artifact.path_escape" and "outside" in e.value.message
    assert [p["problem"] for p in store.verify_files(mv["path"], mv["manifest"]["files"])] == ["escape"]


def test_planted_symlink_for_a_version_folder_is_refused(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    mv = _publish(store, write_model(tmp_path / "src"))
    elsewhere = tmp_path / "elsewhere"
    (store.root / mv["path"]).rename(elsewhere)
    (store.root / mv["path"]).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ArtifactError) as e:
        store.verified_path(mv)
    assert e.value.code == "artifact.path_escape"
    with pytest.raises(ArtifactError):
        store.discard(store.root / mv["path"])
    assert elsewhere.is_dir()


def test_hash_mismatch_is_refused_before_deserialization_and_names_the_file(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    mv = _publish(store, write_model(tmp_path / "src"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = store.root / mv["path"] / "model.joblib"
    payload.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ArtifactError) as e:
        with store.open_verified_payload(mv) as f:
            pickle.load(f)  # must never run
    err = e.value
    expected = mv["manifest"]["files"]["model.joblib"]["sha256"]
    assert err.code == "artifact.hash_mismatch"
    assert "models/churn/1/model.joblib" in err.message and expected in err.message
    assert sha256_file(payload)[0] in err.message
    assert not marker.exists()


def test_verified_payload_loads_the_hashed_bytes(tmp_path):
    import joblib

    store = ArtifactStore(tmp_path / "store")
    mv = _publish(store, write_model(tmp_path / "src"))
    with store.open_verified_payload(mv) as f:
        assert joblib.load(f)["coef"] == [0.5, -1.25]
    assert store.verified_path(mv["manifest"]) == Path(os.path.realpath(store.root / mv["path"] / "model.joblib"))
    assert store.verify_files(mv["path"], mv["manifest"]["files"]) == []


def test_format_outside_allowlist_is_refused(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    mv = _publish(store, write_model(tmp_path / "src", payload=b"\x80\x04N.", fmt="pickle"))
    with pytest.raises(ArtifactError) as e:
        store.verified_path(mv)
    assert e.value.code == "artifact.format_not_allowed" and "pickle" in e.value.message


def test_world_writable_payload_is_refused(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    mv = _publish(store, write_model(tmp_path / "src"))
    os.chmod(store.root / mv["path"] / "model.joblib", 0o666)
    with pytest.raises(ArtifactError) as e:
        store.verified_path(mv)
    assert e.value.code == "artifact.unsafe_mode"


def test_verify_files_reports_missing_changed_and_unexpected(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    mv = _publish(store, write_model(tmp_path / "src", extra={"a.txt": b"a", "b.txt": b"b"}))
    folder = store.root / mv["path"]
    (folder / "a.txt").unlink()
    (folder / "b.txt").write_bytes(b"B")
    (folder / "c.txt").write_bytes(b"c")
    found = {(p["path"], p["problem"]) for p in store.verify_files(mv["path"], mv["manifest"]["files"])}
    assert found == {("models/churn/1/a.txt", "missing"), ("models/churn/1/b.txt", "sha256"),
                     ("models/churn/1/c.txt", "unexpected")}


def test_blobs_are_content_addressed_and_checked(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    f = tmp_path / "report.html"
    f.write_text("<p>hi</p>")
    a, b = store.put_blob(f), store.put_blob(f)
    assert a == b and a["relpath"] == f"blobs/{a['sha256'][:2]}/{a['sha256']}"
    assert store.blob_path(a["sha256"]).read_text() == "<p>hi</p>"
    os.chmod(store.root / a["relpath"], 0o640)
    (store.root / a["relpath"]).write_text("tampered")
    with pytest.raises(ArtifactError, match="corrupt"):
        store.blob_path(a["sha256"])
    with pytest.raises(ArtifactError):
        store.blob_path("../../etc/passwd")


def test_discard_only_deletes_staging_or_version_folders(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactError):
        store.discard(store.root / "models")
    with pytest.raises(ArtifactError):
        store.discard(tmp_path)
    staging = store.new_staging()
    store.discard(staging)
    assert not staging.exists()


def test_publish_write_order_fsync_files_then_rename_then_parent(tmp_path, monkeypatch):
    """Every file is fsynced before the rename that publishes it; the parent dir is fsynced after the rename."""
    store = ArtifactStore(tmp_path / "store")
    src = write_model(tmp_path / "src", extra={"plots/roc.png": b"png", "notes/a/b.txt": b"b"})
    log: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        log.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file", path))
        return real_fsync(fd)

    def replace(a, b, *args, **kw):
        log.append(("replace", os.path.realpath(a), os.path.realpath(os.path.dirname(b)) + "/" +
                    os.path.basename(b)))
        return real_replace(a, b, *args, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    mv = _publish(store, src)
    monkeypatch.undo()

    renames = [i for i, e in enumerate(log) if e[0] == "replace"]
    assert len(renames) == 1
    r = renames[0]
    staging, target = log[r][1], log[r][2]
    assert target == os.path.realpath(store.root / mv["path"])
    file_syncs = {e[2] for e in log[:r] if e[:2] == ("fsync", "file")}
    # every file of the version (payload, extras, model.json) was fsynced in staging before the rename
    expected = {f"{staging}/{rel}" for rel in [*mv["manifest"]["files"], "model.json"]}
    assert expected == file_syncs
    assert not [e for e in log[r:] if e[:2] == ("fsync", "file")]  # nothing written after the rename
    # the staged sub-directories' entries were fsynced before the rename too
    dirs_before = {e[2] for e in log[:r] if e[:2] == ("fsync", "dir")}
    assert {staging, f"{staging}/plots", f"{staging}/notes/a"} <= dirs_before
    # the new entry's parent directory is fsynced after the rename (and only then)
    parent = os.path.realpath(store.root / "models" / "churn")
    after = [e[2] for e in log[r + 1:] if e[:2] == ("fsync", "dir")]
    assert after and after[0] == parent
    assert parent not in dirs_before


def test_symlinked_model_dir_at_publish_is_path_escape_and_nothing_lands_outside(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"keep")
    os.symlink(outside, store.root / "models" / "churn")  # planted after the store was made
    staging, files = store.stage_folder(write_model(tmp_path / "src"))
    store.write_file(staging, "model.json", b"{}")
    with pytest.raises(ArtifactError) as e:
        store.publish(staging, "churn", 1)
    assert e.value.code == "artifact.path_escape"
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]  # nothing landed outside
    assert (outside / "keep.txt").read_bytes() == b"keep"
    assert staging.is_dir()  # still in the store's staging area, for the caller to discard
    store.discard(staging)
    assert list((store.root / ".staging").iterdir()) == []


def test_symlinked_model_dir_refused_by_the_registry(tmp_path):
    from ambidex.db import connect, migrate
    from ambidex.registry import Registry
    from ambidex.tables import model_versions

    import sqlalchemy as sa

    eng = connect(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate(eng)
    store = ArtifactStore(tmp_path / "store")
    outside = tmp_path / "outside"
    (outside / "1").mkdir(parents=True)  # even a same-named folder outside is neither used nor deleted
    os.symlink(outside, store.root / "models" / "churn")
    reg = Registry(eng, store, actor="tester")
    try:
        with pytest.raises(ArtifactError) as e:
            reg.register_model_version("churn", write_model(tmp_path / "src"))
        assert e.value.code == "artifact.path_escape"
        assert [p.name for p in outside.iterdir()] == ["1"] and list((outside / "1").iterdir()) == []
        assert list((store.root / ".staging").iterdir()) == []
        with eng.connect() as c:
            assert [r.status for r in c.execute(sa.select(model_versions.c.status))] == ["FAILED"]
    finally:
        eng.dispose()

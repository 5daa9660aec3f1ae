"""Artifact folders: round trips, verification, pickle refusal, atomic saves, extension."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from recs import artifacts
from recs.artifacts import (
    ARTIFACT_FORMAT_VERSION,
    MANIFEST_NAME,
    ArtifactWriter,
    open_artifact,
    register_component_kind,
)
from recs.errors import ArtifactError, ConfigError
from tests.crash import fail_replace_on


def _write_basic(path: Path, marker: str = "v1") -> None:
    with ArtifactWriter(path) as w:
        w.write_json("config.json", {"marker": marker, "dims": [1, 2]})
        w.write_npy("vectors.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
        w.write_safetensors("weights.safetensors", {"w": np.ones((2, 3), np.float32)})
        w.add_component(
            "tower",
            "two_tower",
            files=["config.json", "vectors.npy", "weights.safetensors"],
            config={"marker": marker, "dim": 4},
        )


def _beside(folder: Path) -> list[str]:
    """What is in `folder`, but the (empty) writer lock files that stay by design."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _rewrite_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest.update(changes)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_round_trip(tmp_path):
    path = tmp_path / "model"
    _write_basic(path)
    art = open_artifact(path)
    assert art.path == path.absolute()
    assert art.format_version == ARTIFACT_FORMAT_VERSION
    assert art.read_json("config.json") == {"marker": "v1", "dims": [1, 2]}
    np.testing.assert_array_equal(
        art.read_npy("vectors.npy"), np.arange(12, dtype=np.float32).reshape(3, 4)
    )
    np.testing.assert_array_equal(art.read_safetensors("weights.safetensors")["w"], np.ones((2, 3)))
    comp = art.component("tower")
    assert comp.kind == "two_tower"
    assert comp.config == {"marker": "v1", "dim": 4}
    assert set(comp.files) == {"config.json", "vectors.npy", "weights.safetensors"}
    manifest = art.manifest
    assert set(manifest["files"]) == set(comp.files)
    assert "numpy" in manifest["library_versions"]
    assert manifest["created"].endswith("Z")
    # no temp folders or backups left beside it
    assert _beside(tmp_path) == ["model"]
    with pytest.raises(ArtifactError, match="no component 'ranker'"):
        art.component("ranker")
    with pytest.raises(ArtifactError, match="no file"):
        art.file("nope.json")


def test_safetensors_torch_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model"
    with ArtifactWriter(path) as w:
        w.write_safetensors("t.safetensors", {"a": torch.arange(6).reshape(2, 3), "b": np.zeros(2)})
    art = open_artifact(path)
    loaded = art.read_safetensors("t.safetensors", framework="pt")
    assert torch.equal(loaded["a"], torch.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(art.read_safetensors("t.safetensors")["b"], np.zeros(2))


def test_folder_component_and_subfolders(tmp_path):
    path = tmp_path / "model"
    with ArtifactWriter(path) as w:
        (w.path / "index").mkdir()
        (w.path / "index" / "a.json").write_text("{}")
        (w.path / "index" / "b.json").write_text("[]")
        w.add_component("items", "item_index", files=["index"], config={"kind": "flat"})
    art = open_artifact(path)
    assert art.component("items").files == ("index/a.json", "index/b.json")
    assert art.file("index").is_dir()


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        open_artifact(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"manifest\.json"):
        open_artifact(tmp_path / "empty")


def test_corrupted_file_refused_with_its_name(tmp_path):
    path = tmp_path / "model"
    _write_basic(path)
    data = bytearray((path / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"checksum mismatch for 'weights\.safetensors'"):
        open_artifact(path)


def test_missing_listed_file_refused(tmp_path):
    path = tmp_path / "model"
    _write_basic(path)
    (path / "vectors.npy").unlink()
    with pytest.raises(ArtifactError, match=r"missing files.*vectors\.npy"):
        open_artifact(path)


def test_extra_file_refused(tmp_path):
    path = tmp_path / "model"
    _write_basic(path)
    (path / "sneaky.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"does not list.*sneaky\.json"):
        open_artifact(path)


@pytest.mark.parametrize("name", ["weights.bin", "data.npy", "model.pkl", "extra.safetensors"])
def test_pickle_refused_at_load_with_its_name(tmp_path, name):
    path = tmp_path / "model"
    _write_basic(path)
    payload = pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)
    (path / name).write_bytes(payload)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    import hashlib

    manifest["files"][name] = hashlib.sha256(payload).hexdigest()  # even with a valid checksum
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"'{name}'.*pickle"):
        open_artifact(path)


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_pickle_refused_at_save(tmp_path, protocol):
    path = tmp_path / "model"
    _write_basic(path)
    with pytest.raises(ArtifactError, match=r"'data\.npy'.*pickle"), ArtifactWriter(path) as w:
        (w.path / "data.npy").write_bytes(pickle.dumps(np.arange(3), protocol=protocol))
    assert open_artifact(path).read_json("config.json")["marker"] == "v1"  # old one intact


def test_object_npy_refused(tmp_path):
    path = tmp_path / "model"
    with pytest.raises(ArtifactError, match="object"), ArtifactWriter(path) as w:
        w.write_npy("objs.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ArtifactError, match=r"'objs\.npy'"), ArtifactWriter(path) as w:
        np.save(w.path / "objs.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert not path.exists()


def test_torch_zip_checkpoint_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model"
    with pytest.raises(ArtifactError, match=r"'model\.data'.*pickle"), ArtifactWriter(path) as w:
        torch.save({"w": torch.ones(2)}, w.path / "model.data")


def test_safetensors_with_pickle_like_header_is_not_refused(tmp_path):
    # A safetensors header of 640 bytes starts with b"\x80\x02": not a pickle.
    path = tmp_path / "model"
    header = json.dumps({"__metadata__": {"pad": "x" * 600}}).encode()
    header += b" " * (640 - len(header))
    with ArtifactWriter(path) as w:
        (w.path / "pad.safetensors").write_bytes((640).to_bytes(8, "little") + header)
    art = open_artifact(path)
    assert art.read_safetensors("pad.safetensors") == {}


def test_newer_format_version_refused(tmp_path):
    path = tmp_path / "model"
    _write_basic(path)
    _rewrite_manifest(path, format_version=ARTIFACT_FORMAT_VERSION + 1)
    with pytest.raises(ArtifactError, match="upgrade recs"):
        open_artifact(path)


def test_unknown_component_kind_refused(tmp_path):
    path = tmp_path / "model"
    _write_basic(path)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["components"]["tower"]["kind"] = "evil_plugin"
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="unknown kind 'evil_plugin'"):
        open_artifact(path)
    with pytest.raises(ArtifactError, match="unknown component kind"), ArtifactWriter(path) as w:
        w.add_component("x", "evil_plugin")


def test_register_component_kind(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "KNOWN_COMPONENT_KINDS", set(artifacts.KNOWN_COMPONENT_KINDS))
    assert register_component_kind("tokenizer") == "tokenizer"
    path = tmp_path / "model"
    with ArtifactWriter(path) as w:
        w.write_json("tok.json", {})
        w.add_component("tok", "tokenizer", files=["tok.json"])
    assert open_artifact(path).component("tok").kind == "tokenizer"
    with pytest.raises(ConfigError):
        register_component_kind("Not A Kind")


def test_paths_may_not_escape(tmp_path):
    path = tmp_path / "model"
    with pytest.raises(ArtifactError), ArtifactWriter(path) as w:
        w.write_json("../outside.json", {})
    with pytest.raises(ArtifactError), ArtifactWriter(path) as w:
        w.write_json("/abs.json", {})
    assert not (tmp_path / "outside.json").exists()
    _write_basic(path)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["files"]["../x"] = "0" * 64
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError):
        open_artifact(path)


def test_config_must_be_plain_json(tmp_path):
    with pytest.raises(ConfigError), ArtifactWriter(tmp_path / "m") as w:
        w.add_component("c", "ranker", config={"fn": print})


def test_exception_inside_with_leaves_previous_artifact(tmp_path):
    path = tmp_path / "model"
    _write_basic(path, "v1")
    with pytest.raises(RuntimeError, match="boom"), ArtifactWriter(path) as w:
        w.write_json("config.json", {"marker": "v2"})
        w.add_component("tower", "two_tower", files=["config.json"])
        raise RuntimeError("boom")
    art = open_artifact(path)
    assert art.read_json("config.json")["marker"] == "v1"
    assert _beside(tmp_path) == ["model"]  # temp folder removed


def test_exception_on_first_save_leaves_nothing(tmp_path):
    path = tmp_path / "model"
    with pytest.raises(RuntimeError), ArtifactWriter(path) as w:
        w.write_json("a.json", {})
        raise RuntimeError("boom")
    assert _beside(tmp_path) == []


def test_crash_between_renames_keeps_old_artifact(tmp_path, monkeypatch):
    path = tmp_path / "model"
    _write_basic(path, "v1")
    # rename 1 (old aside) works, rename 2 (new in) fails; the writer puts the old one back
    fail_replace_on(monkeypatch, {2})
    with pytest.raises(OSError, match="simulated crash"):
        _write_basic(path, "v2")
    monkeypatch.undo()
    assert open_artifact(path).read_json("config.json")["marker"] == "v1"
    assert _beside(tmp_path) == ["model"]


def test_hard_crash_between_renames_is_recovered_by_open(tmp_path, monkeypatch):
    path = tmp_path / "model"
    _write_basic(path, "v1")
    # rename 2 fails and so does the restore: the old artifact stays at model.bak-*,
    # as after a process killed between the two renames.
    fail_replace_on(monkeypatch, {2, 3})
    with pytest.raises(OSError, match="simulated crash"):
        _write_basic(path, "v2")
    monkeypatch.undo()
    assert not path.exists()
    backups = _beside(tmp_path)
    assert len(backups) == 1 and backups[0].startswith("model.bak-")
    art = open_artifact(path)  # restores the backup
    assert art.read_json("config.json")["marker"] == "v1"
    assert _beside(tmp_path) == ["model"]
    _write_basic(path, "v3")  # and saving works again
    assert open_artifact(path).read_json("config.json")["marker"] == "v3"


def test_successful_overwrite_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "model"
    _write_basic(path, "v1")
    _write_basic(path, "v2")
    assert open_artifact(path).read_json("config.json")["marker"] == "v2"
    assert _beside(tmp_path) == ["model"]


def test_refuses_to_replace_a_non_artifact_folder(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not an artifact"), ArtifactWriter(precious) as w:
        w.write_json("a.json", {})
    assert (precious / "notes.txt").read_text() == "keep me"


def test_extend_keeps_old_components(tmp_path):
    path = tmp_path / "model"
    _write_basic(path, "v1")
    with ArtifactWriter(path, base=path) as w:
        assert set(w.components) == {"tower"}
        w.write_json("ranker/params.json", {"weights": [0.5, 0.25]})
        w.add_component("ranker", "ranker", files=["ranker/params.json"], config={"k": 50})
    art = open_artifact(path)
    assert set(art.components) == {"tower", "ranker"}
    assert art.component("tower").config == {"marker": "v1", "dim": 4}
    assert art.read_json("config.json")["marker"] == "v1"
    assert art.read_json("ranker/params.json") == {"weights": [0.5, 0.25]}
    assert art.manifest["extends_created"]

    # replacing a component: remove it, then add the new version
    with ArtifactWriter(path, base=path) as w:
        with pytest.raises(ArtifactError, match="already exists"):
            w.add_component("ranker", "ranker", files=["ranker/params.json"])
        w.remove_component("ranker")
        w.write_json("ranker/params2.json", {"weights": [1.0]})
        w.add_component("ranker", "ranker", files=["ranker/params2.json"], config={"k": 20})
    art = open_artifact(path)
    assert art.component("ranker").files == ("ranker/params2.json",)
    assert "ranker/params.json" not in art.files


def test_extend_into_new_folder_leaves_base_untouched(tmp_path):
    base = tmp_path / "base"
    _write_basic(base, "v1")
    before = (base / MANIFEST_NAME).read_bytes()
    with ArtifactWriter(tmp_path / "extended", base=base) as w:
        w.write_json("config.json", {"marker": "changed"})  # overwrite the copied file
        w.add_component("pop", "baseline", files=[], config={})
    assert (base / MANIFEST_NAME).read_bytes() == before
    assert open_artifact(base).read_json("config.json")["marker"] == "v1"
    ext = open_artifact(tmp_path / "extended")
    assert ext.read_json("config.json")["marker"] == "changed"
    assert set(ext.components) == {"tower", "pop"}


def test_component_listing_unwritten_file_fails(tmp_path):
    path = tmp_path / "model"
    with pytest.raises(ArtifactError, match="not written"), ArtifactWriter(path) as w:
        w.add_component("tower", "two_tower", files=["missing.safetensors"])
    assert not path.exists()


# --- damaged files whose checksum was updated to match ---------------------------------------------


def _checksum_updated(path: Path, rel: str, data: bytes) -> None:
    import hashlib

    (path / rel).write_bytes(data)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("rel", "read", "kind"),
    [
        ("config.json", lambda a: a.read_json("config.json"), "JSON"),
        ("vectors.npy", lambda a: a.read_npy("vectors.npy"), ".npy"),
        ("weights.safetensors", lambda a: a.read_safetensors("weights.safetensors"), "safetensors"),
        ("weights.safetensors", lambda a: a.read_safetensors("weights.safetensors", framework="pt"), "safetensors"),
        ("items.parquet", lambda a: a.read_parquet("items.parquet"), "Parquet"),
    ],
)
def test_a_damaged_file_with_a_matching_checksum_is_named(tmp_path, rel, read, kind):
    import polars as pl

    path = tmp_path / "model"
    with ArtifactWriter(path) as w:
        _write_basic_into(w)
        pl.DataFrame({"item_id": ["a", "b"]}).write_parquet(w.file("items.parquet"))
        w.add_component("catalog", "catalog", files=["items.parquet"])
    good = (path / rel).read_bytes()
    _checksum_updated(path, rel, b"\x07" * 16 + good[16 : len(good) // 2])
    art = open_artifact(path)  # every check passes: the checksum matches
    with pytest.raises(ArtifactError) as caught:
        read(art)
    assert str(caught.value).startswith(f"{path / rel}: unreadable {kind} file (")


def test_a_corrupt_faiss_index_is_named(tmp_path):
    from recs.retrieval.index import ItemIndex

    index = ItemIndex(8, "flat")
    index.add([f"i{k}" for k in range(8)], np.eye(8, dtype=np.float32))
    folder = index.save(tmp_path / "index")
    good = (folder / "index.faiss").read_bytes()
    (folder / "index.faiss").write_bytes(good[:40])
    with pytest.raises(ArtifactError, match=r"index\.faiss: unreadable FAISS index file \("):
        ItemIndex.load(folder)
    (folder / "index.faiss").write_bytes(good)
    (folder / "ids.json").write_text('{"next_id": "many"}')
    with pytest.raises(ArtifactError, match=r"ids\.json: invalid item ids"):
        ItemIndex.load(folder)


def _write_basic_into(w: ArtifactWriter) -> None:
    w.write_json("config.json", {"marker": "v1", "dims": [1, 2]})
    w.write_npy("vectors.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.write_safetensors("weights.safetensors", {"w": np.ones((2, 3), np.float32)})
    w.add_component("tower", "two_tower", files=["config.json", "vectors.npy", "weights.safetensors"])


# --- one writer at a time ----------------------------------------------------------------------------


def test_a_writer_is_refused_while_another_holds_the_artifact(tmp_path, monkeypatch):
    import threading

    from recs.artifacts import artifact_lock
    from recs.errors import ArtifactBusyError

    path = tmp_path / "model"
    _write_basic(path, "v1")
    monkeypatch.setenv("RECS_LOCK_TIMEOUT", "0.1")
    caught: list[BaseException] = []

    def second_writer() -> None:
        try:
            _write_basic(path, "v2")
        except BaseException as exc:
            caught.append(exc)

    with artifact_lock(path):
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
        _write_basic(path, "v3")  # the holder itself may write (re-entrant)
    assert len(caught) == 1 and isinstance(caught[0], ArtifactBusyError) and ".model.lock" in str(caught[0])
    assert open_artifact(path).read_json("config.json")["marker"] == "v3"


def test_concurrent_updates_of_one_artifact_lose_none(tmp_path):
    import threading

    from recs.artifacts import artifact_lock

    path = tmp_path / "model"
    _write_basic(path, "v1")

    def add(name: str) -> None:
        with artifact_lock(path, timeout=120), ArtifactWriter(path, base=path) as w:
            w.write_json(f"{name}.json", {"name": name})
            w.add_component(name, "ranker", files=[f"{name}.json"])

    threads = [threading.Thread(target=add, args=(f"part{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(open_artifact(path).components) == {"tower", "part0", "part1", "part2", "part3"}


def test_update_commands_need_an_existing_artifact(tmp_path):
    from recs.artifacts import artifact_lock

    with pytest.raises(ArtifactError, match="artifact folder not found"), artifact_lock(tmp_path / "x" / "m", create=False):
        pass
    assert list(tmp_path.iterdir()) == []  # nothing created for a missing target


# --- modes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_a_saved_model_follows_the_umask_whatever_it_came_from(trained_artifact, tmp_path, mask):
    """Files copied from a base keep the base's modes (shutil.copy2): an artifact once written 0600
    stayed unreadable to a serving account through every later save."""
    import os
    import shutil
    import stat

    from recs.retrieval.retriever import Retriever

    path = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    for entry in [path, *path.rglob("*")]:
        os.chmod(entry, 0o700 if entry.is_dir() else 0o600)
    old = os.umask(mask)
    try:
        Retriever.load(path).save(path)
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [path, *path.rglob("*")] if p.is_dir()}
    assert modes == {0o777 & ~mask}
    modes = {stat.S_IMODE(p.stat().st_mode) for p in path.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~mask}

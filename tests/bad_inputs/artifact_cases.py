"""Bad-input cases: artifact files. A copy of a trained artifact (`{model}`, `{ranked}`) broken by
the setup: missing, truncated, flipped or corrupt files (with or without a manifest checksum updated
to match, as a careless repair would), pickles, links and paths that leave the folder, newer
formats, the wrong kind of target, a writer lock held by another process. See `case.py`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from tests.bad_inputs.case import CliCase, Workspace

Setup = Callable[[Workspace], object]
MISSING = 4  # ArtifactError.exit_code
BUSY = 5  # ArtifactBusyError.exit_code


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _save_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _update_checksum(folder: Path, rel: str) -> None:
    manifest = _manifest(folder)
    manifest["files"][rel] = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    _save_manifest(folder, manifest)


def _damage(artifact: str, rel: str, how: str, checksum: bool) -> Setup:
    """`how`: truncate (to half), flip (bytes in the middle) or garbage (the header overwritten);
    `checksum`: update the manifest's sha256 to match the damaged file."""

    def setup(ws: Workspace) -> None:
        folder = getattr(ws, artifact)
        path = folder / rel
        data = bytearray(path.read_bytes())
        if how == "truncate":
            data = data[: len(data) // 2]
        elif how == "flip":
            for i in range(len(data) // 2, min(len(data), len(data) // 2 + 16)):
                data[i] ^= 0xFF
        else:
            data[:64] = b"\x07" * min(64, len(data))
        path.write_bytes(bytes(data))
        if checksum:
            _update_checksum(folder, rel)

    return setup


def _delete_manifest(ws: Workspace) -> None:
    (ws.model / "manifest.json").unlink()


def _add_pickle(ws: Workspace) -> None:
    (ws.model / "extra.pkl").write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")


def _symlink_out(ws: Workspace) -> None:
    os.symlink("/etc/passwd", ws.model / "passwd")


def _escaping_entry(ws: Workspace) -> None:
    manifest = _manifest(ws.model)
    manifest["files"]["../outside.json"] = "0" * 64
    _save_manifest(ws.model, manifest)


def _newer_format(ws: Workspace) -> None:
    manifest = _manifest(ws.model)
    manifest["format_version"] = 99
    _save_manifest(ws.model, manifest)


def _unknown_kind(ws: Workspace) -> None:
    manifest = _manifest(ws.model)
    manifest["components"]["towers"]["kind"] = "mystery_model"
    _save_manifest(ws.model, manifest)


def _file_target(ws: Workspace) -> None:
    (ws.tmp / "model.txt").write_text("not an artifact", encoding="utf-8")


def _foreign_folder(ws: Workspace) -> None:
    (ws.tmp / "notes").mkdir()
    (ws.tmp / "notes" / "todo.txt").write_text("keep me", encoding="utf-8")


def _hold_lock(ws: Workspace) -> None:
    """Another writer holds the model's lock: a second `filelock` on the same file conflicts as a
    second process's would (flock locks belong to the open file, not the process)."""
    import filelock

    model = ws.model
    lock = filelock.FileLock(str(model.parent / f".{model.name}.lock"))
    lock.acquire()
    ws._held_lock = lock  # type: ignore[attr-defined]  # released when the workspace goes


def _query(artifact: str = "model") -> tuple[str, ...]:
    return ("query", "--model", "{" + artifact + "}", "--user", "U0001", "--k", "3")


FAST_LOCK = {"RECS_LOCK_TIMEOUT": "0.2"}

CASES: list[CliCase] = [
    CliCase("artifact-missing-manifest", _query(), MISSING, ("manifest.json", "not an artifact"), setup=_delete_manifest),
    CliCase("artifact-truncated-weights", _query(), MISSING, ("towers.safetensors", "checksum mismatch"),
            setup=_damage("model", "towers.safetensors", "truncate", checksum=False)),
    CliCase("artifact-flipped-weights", _query(), MISSING, ("towers.safetensors", "checksum mismatch"),
            setup=_damage("model", "towers.safetensors", "flip", checksum=False)),
    CliCase("artifact-truncated-weights-checksum-updated", _query(), MISSING, ("towers.safetensors", "unreadable safetensors"),
            setup=_damage("model", "towers.safetensors", "truncate", checksum=True)),
    CliCase("artifact-corrupt-faiss-checksum-updated", _query(), MISSING, ("index.faiss", "unreadable faiss index"),
            setup=_damage("model", "index/index.faiss", "garbage", checksum=True)),
    CliCase("artifact-truncated-faiss-checksum-updated", ("build-index", "--model", "{model}"), MISSING,
            ("index.faiss", "unreadable faiss index"), setup=_damage("model", "index/index.faiss", "truncate", checksum=True)),
    CliCase("artifact-corrupt-items-parquet-checksum-updated", _query(), MISSING, ("items.parquet", "unreadable parquet"),
            setup=_damage("model", "items.parquet", "garbage", checksum=True)),
    CliCase("artifact-corrupt-vectors-npy-checksum-updated", _query(), MISSING, ("item_vectors.npy", "unreadable .npy"),
            setup=_damage("model", "item_vectors.npy", "garbage", checksum=True)),
    CliCase("artifact-corrupt-config-json-checksum-updated", _query(), MISSING, ("retrieval_config.json", "unreadable json"),
            setup=_damage("model", "retrieval_config.json", "garbage", checksum=True)),
    CliCase("artifact-corrupt-index-ids-checksum-updated", _query(), MISSING, ("ids.json", "unreadable json"),
            setup=_damage("model", "index/ids.json", "garbage", checksum=True)),
    CliCase("artifact-corrupt-cross-encoder-checksum-updated", _query("ranked"), MISSING,
            ("cross_encoder.safetensors", "unreadable safetensors"),
            setup=_damage("ranked", "cross_encoder.safetensors", "truncate", checksum=True)),
    CliCase("artifact-pickle-file", _query(), MISSING, ("extra.pkl", "pickle"), setup=_add_pickle),
    CliCase("artifact-symlink-out-of-the-folder", _query(), MISSING, ("symbolic link", "passwd"), setup=_symlink_out),
    CliCase("artifact-manifest-path-escapes", _query(), MISSING, ("outside.json", "inside the artifact"), setup=_escaping_entry),
    CliCase("artifact-newer-format-version", _query(), MISSING, ("format version 99", "upgrade recs"), setup=_newer_format),
    CliCase("artifact-unknown-component-kind", _query(), MISSING, ("mystery_model", "unknown kind"), setup=_unknown_kind),
    CliCase("artifact-model-is-a-file", ("query", "--model", "{tmp}/model.txt", "--user", "U0001"), MISSING,
            ("model.txt", "not a folder"), setup=_file_target),
    CliCase("artifact-model-is-a-foreign-folder", ("query", "--model", "{tmp}/notes", "--user", "U0001"), MISSING,
            ("notes", "not an artifact"), setup=_foreign_folder),
    CliCase("artifact-model-missing", ("query", "--model", "{tmp}/nothing", "--user", "U0001"), MISSING,
            ("nothing", "not found")),
    CliCase("artifact-build-index-model-missing", ("build-index", "--model", "{tmp}/nothing"), MISSING,
            ("nothing", "not found")),
    CliCase("artifact-export-out-is-a-foreign-folder", ("export", "--model", "{model}", "--out", "{tmp}/notes"), 2,
            ("notes", "not an artifact"), setup=_foreign_folder),
    CliCase("artifact-lock-held-by-another-writer", ("build-index", "--model", "{model}"), BUSY,
            ("being written by another recs process", ".model.lock", "try again"), setup=_hold_lock, env=FAST_LOCK),
]

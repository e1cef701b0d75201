"""The pure parts of publishing: key layout, which files, the manifest and the upload decision."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aoi_pipeline.core.publish_manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    ROLES,
    RemoteObject,
    build_manifest,
    deliverable_files,
    digest_files,
    manifest_bytes,
    manifest_sums,
    needs_upload,
    normalise_prefix,
    object_key,
    version_folder,
)


def _deliverable(root: Path) -> dict[str, Path]:
    contents = {
        "best_model": ("best_model.json", b'{"iteration": "iter1"}'),
        "inference_spec": ("best_model_inference_spec.yaml", b"model: {}\n"),
        "report": ("DEFT_Loop_Report.html", b"<html></html>"),
        "approval": ("approval.json", b'{"decision": "approve"}'),
        "checkpoint": ("iter1/train/model_epoch_002.pth", b"\x00weights\x01" * 100),
    }
    paths = {}
    for role, (name, data) in contents.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[role] = path
    return paths


@pytest.mark.parametrize(
    ("given", "expected"),
    [("", ""), ("/", ""), ("models", "models"), ("/models/line-7/", "models/line-7"), (" a/b_c.d=1+2 ", "a/b_c.d=1+2")],
)
def test_prefixes_are_normalised(given: str, expected: str) -> None:
    assert normalise_prefix(given) == expected


@pytest.mark.parametrize("bad", ["a//b", "../x", "a/./b", "a b", "a/ü", "a/.hidden"])
def test_prefixes_with_empty_dot_or_odd_segments_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        normalise_prefix(bad)


def test_a_version_lives_under_prefix_and_run_name() -> None:
    assert version_folder("models/line7/", "run_20260101_000000") == "models/line7/run_20260101_000000"
    assert version_folder("", "run_20260101_000000") == "run_20260101_000000"
    assert object_key("p/run_1", MANIFEST_NAME) == "p/run_1/manifest.json"
    with pytest.raises(ValueError, match="run name"):
        version_folder("p", "../escape")


def test_every_role_is_published_in_upload_order_by_file_name(tmp_path: Path) -> None:
    files, missing = deliverable_files(_deliverable(tmp_path))
    assert missing == []
    assert [file.role for file in files] == list(ROLES)
    assert ROLES[-1] == "checkpoint"  # the big upload last, so a resume has the small files already
    names = {file.role: file.name for file in files}
    assert names["checkpoint"] == "model_epoch_002.pth"
    assert names["best_model"] == "best_model.json"


def test_missing_or_empty_files_are_reported_by_role(tmp_path: Path) -> None:
    paths = _deliverable(tmp_path)
    paths["report"].write_bytes(b"")
    paths["approval"].unlink()
    del paths["checkpoint"]
    files, missing = deliverable_files(paths)
    assert missing == ["report", "approval", "checkpoint"]
    assert [file.role for file in files] == ["best_model", "inference_spec"]


def test_a_file_named_like_the_manifest_is_refused(tmp_path: Path) -> None:
    paths = _deliverable(tmp_path)
    clash = tmp_path / "ckpt" / MANIFEST_NAME
    clash.parent.mkdir()
    clash.write_bytes(b"x")
    paths["checkpoint"] = clash
    with pytest.raises(ValueError, match="clash"):
        deliverable_files(paths)


def test_unknown_roles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown deliverable roles"):
        deliverable_files({"logs": tmp_path})


def test_the_manifest_lists_each_files_sum_and_size(tmp_path: Path) -> None:
    paths = _deliverable(tmp_path)
    files, _ = deliverable_files(paths)
    manifest = build_manifest("run_1", digest_files(files), iteration="iter1")
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["run"] == "run_1" and manifest["iteration"] == "iter1"
    for entry in manifest["files"]:
        data = paths[entry["role"]].read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size"] == len(data)
    assert manifest_sums(manifest)["approval.json"] == hashlib.sha256(paths["approval"].read_bytes()).hexdigest()


def test_manifest_bytes_are_canonical_so_a_rerun_recognises_its_own_manifest(tmp_path: Path) -> None:
    files, _ = deliverable_files(_deliverable(tmp_path))
    first = manifest_bytes(build_manifest("run_1", digest_files(files), iteration="iter1"))
    second = manifest_bytes(dict(reversed(build_manifest("run_1", digest_files(files), iteration="iter1").items())))
    assert first == second
    assert json.loads(first)["files"][0]["name"] == "best_model.json"


def test_a_file_changed_after_publishing_changes_the_manifest(tmp_path: Path) -> None:
    paths = _deliverable(tmp_path)
    before = manifest_bytes(build_manifest("run_1", digest_files(deliverable_files(paths)[0])))
    paths["checkpoint"].write_bytes(b"retrained")
    after = manifest_bytes(build_manifest("run_1", digest_files(deliverable_files(paths)[0])))
    assert before != after


@pytest.mark.parametrize(
    ("remote", "upload"),
    [
        (None, True),
        (RemoteObject(size=10, sha256="abc"), False),
        (RemoteObject(size=9, sha256="abc"), True),  # truncated by an interrupted writer
        (RemoteObject(size=10, sha256="def"), True),  # other bytes under the key
        (RemoteObject(size=10, sha256=None), True),  # written by someone else, sum unknown
    ],
)
def test_an_object_is_uploaded_unless_the_bucket_holds_these_very_bytes(
    remote: RemoteObject | None, upload: bool
) -> None:
    assert needs_upload(10, "abc", remote) is upload

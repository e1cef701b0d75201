"""What a finished run publishes to object storage and under which keys; pure, no storage client here.

A published version is the folder `<prefix>/<run name>/` in a bucket. It holds the deliverable's files
(`best_model.json`, the inference spec, the chosen checkpoint, the run report and the approval record) and
`manifest.json`, which lists each file's object name, role, size and sha256. The manifest is uploaded last,
so a reader that finds it finds every file it lists, complete. Every object carries its sha256 as metadata;
`needs_upload` compares that with the local file, which makes publishing idempotent and resumable: a rerun
uploads only what is missing or different, and a version whose manifest is already there is never changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoi_pipeline.core.files import sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "aoi-pipeline-deliverable/1"
# Stored as S3 user metadata (x-amz-meta-sha256): the object's content sum, checked before any re-upload.
SHA256_METADATA = "sha256"
# Upload order; the manifest comes after all of them.
ROLES = ("best_model", "inference_spec", "report", "approval", "checkpoint")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


def normalise_prefix(prefix: str) -> str:
    """`models/line-7/` -> `models/line-7`; refuses empty segments, `.`/`..` and characters S3 tools mangle."""
    cleaned = prefix.strip().strip("/")
    if not cleaned:
        return ""
    bad = [segment for segment in cleaned.split("/") if not _SEGMENT.fullmatch(segment)]
    if bad:
        raise ValueError(
            f"prefix segments {bad} are not allowed: use letters, digits and . _ = + - separated by single '/' "
            "(no empty, '.' or '..' segments)"
        )
    return cleaned


def version_folder(prefix: str, run_name: str) -> str:
    """The folder of one published version: `<prefix>/<run name>` (just the run name without a prefix)."""
    if not _SEGMENT.fullmatch(run_name):
        raise ValueError(f"run name {run_name!r} cannot be an object key segment")
    cleaned = normalise_prefix(prefix)
    return f"{cleaned}/{run_name}" if cleaned else run_name


def object_key(folder: str, name: str) -> str:
    return f"{folder}/{name}"


@dataclass(frozen=True)
class DeliverableFile:
    """One file of the deliverable: its role, where it is in the run directory, its object name."""

    role: str
    path: Path
    name: str


@dataclass(frozen=True)
class FileDigest:
    """A deliverable file with the sum and size it has now, on disk."""

    file: DeliverableFile
    sha256: str
    size: int


@dataclass(frozen=True)
class RemoteObject:
    """What the bucket holds under a key: its size and the sha256 recorded as metadata (None if absent)."""

    size: int
    sha256: str | None


def deliverable_files(paths: Mapping[str, Path]) -> tuple[list[DeliverableFile], list[str]]:
    """The files to publish by role, in upload order, and the roles whose file is missing or empty."""
    unknown = sorted(set(paths) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown deliverable roles {unknown}; known: {ROLES}")
    files, missing = [], []
    for role in ROLES:
        path = paths.get(role)
        if path is None or not path.is_file() or path.stat().st_size == 0:
            missing.append(role)
            continue
        files.append(DeliverableFile(role, path, path.name))
    names = [file.name for file in files]
    clashes = sorted({name for name in names if names.count(name) > 1 or name == MANIFEST_NAME})
    if clashes:
        raise ValueError(f"deliverable object names {clashes} clash with each other or with the manifest")
    return files, missing


def digest_files(files: Sequence[DeliverableFile]) -> list[FileDigest]:
    return [FileDigest(file, sha256_file(file.path), file.path.stat().st_size) for file in files]


def build_manifest(run_name: str, digests: Sequence[FileDigest], **about: Any) -> dict[str, Any]:
    """The manifest of one version; `about` adds plain facts (iteration, metric) for readers."""
    return {
        "format": MANIFEST_FORMAT,
        "run": run_name,
        **about,
        "files": [
            {"name": item.file.name, "role": item.file.role, "size": item.size, "sha256": item.sha256}
            for item in digests
        ],
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical bytes: the same deliverable gives the same manifest, so a rerun recognises its own."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def needs_upload(size: int, sha256: str, remote: RemoteObject | None) -> bool:
    """Upload unless the bucket already holds these very bytes (same size and recorded sha256)."""
    return remote is None or remote.size != size or remote.sha256 != sha256


def manifest_sums(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Object name -> sha256, as listed by a manifest (for readers checking what they downloaded)."""
    return {str(item["name"]): str(item["sha256"]) for item in manifest.get("files", [])}

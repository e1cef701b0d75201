"""Publishing a finished run's deliverable to an S3 bucket named by a prefect-aws `S3Bucket` block.

The block (bucket name, optional folder, and `AwsCredentials` with keys, region and endpoint) lives on the
Prefect server, so the pipeline config names it and holds no secret. A publication uploads the deliverable's
files to `<block folder>/<prefix>/<run name>/`, each with its sha256 as object metadata, then the manifest
last (`core.publish_manifest`). A rerun after an interruption aborts the interrupted multipart uploads,
skips every object whose recorded sum matches and uploads the rest, so nothing is stored twice; a version
whose manifest is already there is left untouched. Every attempt is recorded under `publish` in the run's
`pipeline_state.json`; a failure leaves the workspace as it was and raises a `PublishError` that names the
block, bucket and endpoint, what went wrong and how to publish again. No key or secret is logged or recorded.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from aoi_pipeline.config import PipelineConfig, PublishSettings
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.publish_manifest import (
    MANIFEST_NAME,
    SHA256_METADATA,
    RemoteObject,
    build_manifest,
    deliverable_files,
    digest_files,
    manifest_bytes,
    needs_upload,
    object_key,
    version_folder,
)
from aoi_pipeline.core.run_report import RUN_REPORT_FILE
from aoi_pipeline.errors import AoiPipelineError, Problem, PublishError
from aoi_pipeline.pipeline.layout import PipelineRecord, RunLayout, check_run_name

# Bounded waits: an unreachable endpoint fails in seconds, not after botocore's default minutes of retries.
UPLOAD_TIMEOUTS = {"connect_timeout": 10, "read_timeout": 120, "retries": {"max_attempts": 3, "mode": "standard"}}
PROBE_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1, "mode": "standard"}}
_MISSING_KEY_CODES = {"404", "NoSuchKey", "NotFound"}
_REFUSED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


@dataclass(frozen=True)
class Destination:
    """Where one version goes: the block, its bucket and endpoint, and the version's key folder."""

    block: str
    bucket: str
    folder: str
    endpoint: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.folder}/"

    def describe(self) -> str:
        return f"S3Bucket block {self.block!r} -> {self.url} (endpoint {self.endpoint})"


@dataclass(frozen=True)
class Publication:
    """The outcome of one publish: what was uploaded now and what the bucket already held."""

    destination: str
    uploaded: tuple[str, ...]
    already_present: tuple[str, ...]
    manifest_sha256: str

    @property
    def changed(self) -> bool:
        return bool(self.uploaded)

    def summary(self) -> str:
        if not self.uploaded:
            return f"already published: {self.destination} (manifest sha256 {self.manifest_sha256[:12]})"
        kept = f", {len(self.already_present)} already there" if self.already_present else ""
        return f"published {self.destination}: {len(self.uploaded)} objects uploaded{kept}"


def load_bucket_block(name: str) -> Any:
    """The `S3Bucket` block of that name from the Prefect server."""
    from prefect_aws import S3Bucket

    try:
        return S3Bucket.load(name)
    except ValueError as error:
        raise PublishError.at(
            f"S3Bucket block {name!r} (pipeline config key publish.bucket_block)",
            f"cannot be loaded from the Prefect server ({_first_line(error)})",
            "register it (`aoi-pipeline blocks register`, see the README's Publishing section) or correct the name",
        ) from None


def s3_client(bucket: Any, timeouts: dict[str, Any]) -> Any:
    """A boto3 S3 client from the block's credentials and client parameters, with bounded timeouts."""
    from botocore.config import Config

    credentials = bucket.credentials
    params = credentials.aws_client_parameters.get_params_override()
    region = getattr(credentials, "region_name", None)
    if region:
        params["region_name"] = region
    bounded = Config(**timeouts)
    params["config"] = params["config"].merge(bounded) if "config" in params else bounded
    return credentials.get_boto3_session().client("s3", **params)


def destination(bucket: Any, block: str, settings: PublishSettings, run_name: str) -> Destination:
    folder = "/".join(
        part for part in (bucket.bucket_folder.strip("/"), version_folder(settings.prefix, run_name)) if part
    )
    endpoint = bucket.credentials.aws_client_parameters.endpoint_url or "AWS S3 (default endpoint)"
    return Destination(block=block, bucket=bucket.bucket_name, folder=folder, endpoint=_without_userinfo(endpoint))


def probe_bucket(block_name: str) -> tuple[bool, str]:
    """Read-only reachability check for the pre-flight: load the block, HEAD the bucket; writes nothing."""
    try:
        bucket = load_bucket_block(block_name)
        where = f"s3://{bucket.bucket_name} via block {block_name!r}"
        client = s3_client(bucket, PROBE_TIMEOUTS)
        with _s3_errors(destination(bucket, block_name, PublishSettings(bucket_block=block_name), "probe")):
            client.head_bucket(Bucket=bucket.bucket_name)
    except AoiPipelineError as error:
        return False, "; ".join(f"{problem.what} (fix: {problem.fix})" for problem in error.problems)
    except Exception as error:  # the pre-flight reports, it never crashes on a probe
        return False, f"{type(error).__name__}: {_first_line(error)}"
    return True, f"{where} reachable (read-only HEAD)"


def publish_run(layout: RunLayout, settings: PublishSettings, *, bucket: Any | None = None) -> Publication:
    """Upload the run's deliverable and then its manifest; idempotent and resumable (see the module doc)."""
    files, missing = deliverable_files(deliverable_paths(layout))
    if missing:
        raise PublishError.at(
            str(layout.root),
            f"the deliverable is incomplete: {', '.join(missing)} missing or empty",
            "publish a run whose handoff completed (`aoi-pipeline status RUN_DIR`), or finish the run first",
        )
    digests = digest_files(files)
    bucket = bucket if bucket is not None else load_bucket_block(settings.bucket_block)
    target = destination(bucket, settings.bucket_block, settings, layout.root.name)
    manifest = manifest_bytes(build_manifest(layout.root.name, digests, **_about(layout)))
    manifest_sum = hashlib.sha256(manifest).hexdigest()
    manifest_key = object_key(target.folder, MANIFEST_NAME)
    client = s3_client(bucket, UPLOAD_TIMEOUTS)
    uploaded: list[str] = []
    present: list[str] = []
    with _s3_errors(target):
        published = _remote(client, target.bucket, manifest_key)
        if published is not None:
            if published.sha256 != manifest_sum:
                raise _conflict(target, layout)
            return Publication(target.url, (), (*(item.file.name for item in digests), MANIFEST_NAME), manifest_sum)
        _abort_interrupted_uploads(client, target)
        for item in digests:
            key = object_key(target.folder, item.file.name)
            if not needs_upload(item.size, item.sha256, _remote(client, target.bucket, key)):
                present.append(item.file.name)
                continue
            extra = {"Metadata": {SHA256_METADATA: item.sha256}, "ContentType": _content_type(item.file.path)}
            client.upload_file(str(item.file.path), target.bucket, key, ExtraArgs=extra)
            uploaded.append(item.file.name)
        client.put_object(
            Bucket=target.bucket,
            Key=manifest_key,
            Body=manifest,
            ContentType="application/json",
            Metadata={SHA256_METADATA: manifest_sum},
        )
    return Publication(target.url, (*uploaded, MANIFEST_NAME), tuple(present), manifest_sum)


def settings_for(
    config: PipelineConfig | None, *, bucket_block: str | None = None, prefix: str | None = None
) -> PublishSettings:
    """The publish settings of a config, with a block or prefix given on the command line on top."""
    configured = config.publish if config is not None else None
    block = bucket_block or (configured.bucket_block if configured else None)
    if block is None:
        raise PublishError.at(
            "publish settings",
            "no S3Bucket block is named (neither publish.bucket_block in the config nor --bucket-block)",
            "add `publish: {bucket_block: NAME, prefix: PATH}` to the pipeline config or pass --bucket-block NAME",
        )
    chosen = prefix if prefix is not None else (configured.prefix if configured else "")
    try:
        return PublishSettings(bucket_block=block, prefix=chosen)
    except ValidationError as error:
        problems = [
            Problem(
                f"publish setting {'.'.join(map(str, item['loc']))} ({item.get('input')!r})", item["msg"], "correct it"
            )
            for item in error.errors()
        ]
        raise PublishError(problems) from None


def run_directory(run: str, config: PipelineConfig | None) -> RunLayout:
    """A run given as its directory, or as its name under the config's results root."""
    if Path(run).is_dir():
        return RunLayout(Path(run).resolve())
    check_run_name(run, where="publish RUN (a run directory, or a run name)")
    if config is not None and (config.resolved_results_root / run).is_dir():
        return RunLayout.for_run(config.resolved_results_root, run)
    raise PublishError.at(
        f"run {run!r}",
        "is neither a run directory nor a run name under the config's results root",
        "pass the run directory (<results root>/run_<YYYYMMDD_HHMMSS>) or --config with the run's name",
    )


def publish_and_record(layout: RunLayout, settings: PublishSettings, *, bucket: Any | None = None) -> Publication:
    """Publish and record the outcome in the run state; a failure is recorded as an error event and raised."""
    try:
        publication = publish_run(layout, settings, bucket=bucket)
    except PublishError as error:
        retry = f"aoi-pipeline publish {layout.root} --bucket-block {settings.bucket_block}"
        retry += f" --prefix {settings.prefix}" if settings.prefix else ""
        record_publish_event(layout, status="error", summary=error.render())
        safe = Problem(
            f"run directory {layout.root}",
            "the deliverable was not published but is intact there (nothing in the workspace was changed)",
            f"fix the problem above, then publish again: {retry}",
        )
        raise PublishError((*error.problems, safe), summary=f"publishing run {layout.root.name} failed") from None
    record_publish_event(
        layout,
        status="published",
        summary=publication.summary(),
        destination=publication.destination,
        manifest_sha256=publication.manifest_sha256,
    )
    return publication


def record_publish_event(layout: RunLayout, *, status: str, summary: str, **fields: Any) -> dict[str, Any]:
    """Append an event to `publish.events` of pipeline_state.json and set the publication's status."""
    data = PipelineRecord(layout).read()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    stored = data.get("publish")
    previous = stored if isinstance(stored, dict) else {}
    events = [*previous.get("events", []), {"at": at, "status": status, "summary": summary}]
    data["publish"] = {"status": status, "at": at, **fields, "events": events}
    atomic_write_json(layout.pipeline_state, data)
    return data["publish"]


def deliverable_paths(layout: RunLayout) -> dict[str, Path]:
    """Each role's file in the run directory; the checkpoint is the one best_model.json names."""
    paths = {
        "best_model": layout.best_model,
        "inference_spec": layout.best_model_inference_spec,
        "report": layout.root / RUN_REPORT_FILE,
        "approval": layout.approval,
    }
    checkpoint = _best_model(layout).get("checkpoint")
    if isinstance(checkpoint, str) and checkpoint:
        paths["checkpoint"] = Path(checkpoint)
    return paths


def _best_model(layout: RunLayout) -> dict[str, Any]:
    try:
        data = json.loads(layout.best_model.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _about(layout: RunLayout) -> dict[str, Any]:
    best = _best_model(layout)
    about: dict[str, Any] = {"iteration": best.get("iteration")}
    result = best.get("metric_result")
    if isinstance(result, dict):
        about["metric"] = {key: result.get(key) for key in ("name", "value", "passed")}
    return about


def _remote(client: Any, bucket: str, key: str) -> RemoteObject | None:
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code")) in _MISSING_KEY_CODES:
            return None
        raise
    return RemoteObject(int(head["ContentLength"]), head.get("Metadata", {}).get(SHA256_METADATA))


def _abort_interrupted_uploads(client: Any, target: Destination) -> None:
    """Multipart uploads a killed publisher left open under this version: their parts would linger unseen."""
    listing = client.list_multipart_uploads(Bucket=target.bucket, Prefix=f"{target.folder}/")
    for upload in listing.get("Uploads", []):
        client.abort_multipart_upload(Bucket=target.bucket, Key=upload["Key"], UploadId=upload["UploadId"])


def _conflict(target: Destination, layout: RunLayout) -> PublishError:
    return PublishError.at(
        target.describe(),
        f"a different deliverable was already published as {layout.root.name} (its manifest differs); "
        "published versions are never overwritten",
        "publish under another publish.prefix (or --prefix), or delete that version from the bucket first",
    )


@contextmanager
def _s3_errors(target: Destination) -> Iterator[None]:
    """Turn botocore's failures into a PublishError naming the block, bucket and endpoint, and the fix."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError:
        raise PublishError.at(
            target.describe(),
            "no credentials were found for the bucket",
            "give the block's AwsCredentials an access key and secret (aoi-pipeline blocks register)",
        ) from None
    except ClientError as error:
        raise _refused(target, error) from None
    except (BotoCoreError, S3UploadFailedError) as error:
        raise PublishError.at(
            target.describe(),
            f"the S3 endpoint cannot be reached or failed ({type(error).__name__}: {_first_line(error)})",
            "start or reach the S3 service, or correct the endpoint_url in the block's AwsCredentials "
            "(aws_client_parameters)",
        ) from None


def _refused(target: Destination, error: Any) -> PublishError:
    code = str(error.response.get("Error", {}).get("Code"))
    operation = getattr(error, "operation_name", "request")
    if code in _REFUSED_CODES:
        what, fix = (
            f"the credentials were refused ({code} on {operation})",
            "correct the key pair in the block's AwsCredentials",
        )
    elif code in ("NoSuchBucket", "404"):
        what, fix = (
            f"bucket {target.bucket!r} does not exist ({code} on {operation})",
            "create the bucket or correct bucket_name in the block",
        )
    else:
        what, fix = f"the S3 server refused {operation} ({code})", "check the bucket's permissions and the server's log"
    return PublishError.at(target.describe(), what, fix)


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if not parts.username and not parts.password:
        return url
    hostname = cast(str, parts.hostname)  # a URL with user info names its host
    return urlunsplit(parts._replace(netloc=hostname + (f":{parts.port}" if parts.port else "")))


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]

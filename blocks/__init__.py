"""The Prefect blocks the pipeline uses, and `register` that saves them from environment variables or a file.

- `aoi-registry` (prefect-docker `DockerRegistryCredentials`): the registry the job images are pulled from.
  `aoi-pipeline pools setup` makes the Docker pool's base job template refer to it when it exists.
- `ngc-api-key` (`Secret`): the NGC API key. A `tao-job` run hands it to its job as NGC_API_KEY.
- the deliverables bucket (prefect-aws `S3Bucket`, default `aoi-deliverables`, with its `AwsCredentials`):
  where a finished run publishes its deliverable (`publish.bucket_block`; keys in
  `aoi_pipeline.pipeline.publish_blocks`).
- `aoi-approval-notification` (a webhook or Slack notification block) and the automation that sends it a
  message whenever a run pauses for approval (keys in `aoi_pipeline.pipeline.notify`).

Sources, by key (environment variable, or the same key in a YAML file given to `aoi-pipeline blocks register
--file`): AOI_REGISTRY_URL, AOI_REGISTRY_USERNAME, AOI_REGISTRY_PASSWORD, NGC_API_KEY, the S3 keys and the
notification keys. A value
is stored only in the block (Prefect encrypts block data); nothing here prints, logs or returns one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from aoi_pipeline.pipeline.notify import (
    NOTIFY_SOURCE_KEYS,
    check_notification_keys,
    register_approval_notification,
)
from aoi_pipeline.pipeline.publish_blocks import S3_SOURCE_KEYS, missing_s3_keys, register_s3_blocks

REGISTRY_BLOCK = "aoi-registry"
REGISTRY_KEYS = ("AOI_REGISTRY_URL", "AOI_REGISTRY_USERNAME", "AOI_REGISTRY_PASSWORD")
# Environment variable of a job -> the Secret block holding its value.
SECRET_BLOCKS: dict[str, str] = {"NGC_API_KEY": "ngc-api-key"}
SOURCE_KEYS = (*REGISTRY_KEYS, *SECRET_BLOCKS, *S3_SOURCE_KEYS, *NOTIFY_SOURCE_KEYS)


def secret_block_name(env_name: str) -> str:
    """The Secret block that holds an environment variable's value: NGC_API_KEY -> ngc-api-key."""
    return SECRET_BLOCKS.get(env_name) or re.sub(r"[^a-z0-9]+", "-", env_name.lower()).strip("-")


def register(source: Mapping[str, str]) -> list[str]:
    """Save the blocks whose values `source` holds; returns the names of the blocks saved (never values)."""
    from prefect.blocks.system import Secret
    from prefect_docker import DockerRegistryCredentials

    check_notification_keys(source)
    saved: list[str] = []
    registry = {key: source.get(key) for key in REGISTRY_KEYS}
    if all(registry.values()):
        DockerRegistryCredentials(
            registry_url=registry["AOI_REGISTRY_URL"],
            username=registry["AOI_REGISTRY_USERNAME"],
            password=registry["AOI_REGISTRY_PASSWORD"],
        ).save(REGISTRY_BLOCK, overwrite=True)
        saved.append(REGISTRY_BLOCK)
    for env_name, block in SECRET_BLOCKS.items():
        if source.get(env_name):
            # pydantic turns the text into a SecretStr; Prefect's Secret[T] signature leaves T unsolved here.
            Secret(value=source[env_name]).save(block, overwrite=True)  # type: ignore[arg-type]
            saved.append(block)
    return saved + register_s3_blocks(source) + register_approval_notification(source)


def missing_keys(source: Mapping[str, str]) -> dict[str, list[str]]:
    """What a partial configuration lacks, by block group (registry: all three keys or none; S3: a bucket
    for the other keys and both halves of the key pair); empty when nothing is missing."""
    given = [key for key in REGISTRY_KEYS if source.get(key)]
    missing = {
        "registry credentials": [key for key in REGISTRY_KEYS if not source.get(key)] if given else [],
        "S3 deliverables bucket": missing_s3_keys(source),
    }
    return {group: keys for group, keys in missing.items() if keys}


def secret_env(env_names: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Values for the job's environment: each name from `environ`, else from its Secret block; plus every
    known secret (NGC_API_KEY) whose block exists. Names with neither are left out (the launcher then says
    which one is unset)."""
    from prefect.blocks.system import Secret

    values: dict[str, str] = {}
    for name in dict.fromkeys([*env_names, *SECRET_BLOCKS]):
        if name in environ:
            continue
        try:
            # Called from synchronous code, Block.load returns the block itself, not a coroutine.
            secret = cast("Secret[Any]", Secret.load(secret_block_name(name)))
            values[name] = str(secret.get())
        except ValueError:  # no such block
            continue
    return values


def registry_credentials_ref() -> dict[str, Any] | None:
    """A base-job-template reference to the registry block (resolved by the worker), or None without one."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(
                REGISTRY_BLOCK, "docker-registry-credentials", include_secrets=False
            )
        except ObjectNotFound:
            return None
    return {"$ref": {"block_document_id": str(document.id)}}

"""Saving the blocks a publication needs: an `AwsCredentials` block and the `S3Bucket` block that uses it.

Values come from a mapping of keys (the environment, or a file given to `aoi-pipeline blocks register`):
AOI_S3_BUCKET (the bucket name; without it nothing is saved), AOI_S3_BLOCK (the S3Bucket block's name,
default `aoi-deliverables`; the config's `publish.bucket_block`), AOI_S3_BUCKET_FOLDER (optional folder in
the bucket), AOI_S3_ENDPOINT_URL (for S3-compatible servers such as Ceph RGW or MinIO), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION. The credentials block is named `<block>-credentials`. A key
or secret is stored only in the block (Prefect encrypts block data); this module returns block names only.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_BUCKET_BLOCK = "aoi-deliverables"
S3_SOURCE_KEYS = (
    "AOI_S3_BUCKET",
    "AOI_S3_BLOCK",
    "AOI_S3_BUCKET_FOLDER",
    "AOI_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)
_KEY_PAIR = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def missing_s3_keys(source: Mapping[str, str]) -> list[str]:
    """What a partial S3 configuration lacks: a bucket for the other keys, both halves of the key pair."""
    given = [key for key in S3_SOURCE_KEYS if source.get(key)]
    if not given:
        return []
    missing = [] if source.get("AOI_S3_BUCKET") else ["AOI_S3_BUCKET"]
    if any(source.get(key) for key in _KEY_PAIR):
        missing += [key for key in _KEY_PAIR if not source.get(key)]
    return missing


def register_s3_blocks(source: Mapping[str, str]) -> list[str]:
    """Save the credentials and bucket blocks when `source` names a bucket; returns the names saved."""
    if not source.get("AOI_S3_BUCKET"):
        return []
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    name = source.get("AOI_S3_BLOCK") or DEFAULT_BUCKET_BLOCK
    credentials = AwsCredentials(
        aws_access_key_id=source.get("AWS_ACCESS_KEY_ID") or None,
        # pydantic turns the text into a SecretStr; the prefect-aws signature names only SecretStr.
        aws_secret_access_key=source.get("AWS_SECRET_ACCESS_KEY") or None,  # type: ignore[arg-type]
        region_name=source.get("AWS_DEFAULT_REGION") or None,
        aws_client_parameters=AwsClientParameters(endpoint_url=source.get("AOI_S3_ENDPOINT_URL") or None),
    )
    credentials.save(f"{name}-credentials", overwrite=True)
    S3Bucket(
        bucket_name=source["AOI_S3_BUCKET"],
        bucket_folder=source.get("AOI_S3_BUCKET_FOLDER") or "",
        credentials=credentials,
    ).save(name, overwrite=True)
    return [f"{name}-credentials", name]

"""Which S3 settings are enough to save the publishing blocks (saving itself is tested against a server)."""

from __future__ import annotations

import pytest

from aoi_pipeline.pipeline.publish_blocks import missing_s3_keys, register_s3_blocks


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        ({}, []),
        ({"AOI_S3_BUCKET": "aoi-models"}, []),  # keys from the machine's AWS configuration
        ({"AOI_S3_BUCKET": "b", "AWS_ACCESS_KEY_ID": "id"}, ["AWS_SECRET_ACCESS_KEY"]),
        ({"AWS_SECRET_ACCESS_KEY": "s"}, ["AOI_S3_BUCKET", "AWS_ACCESS_KEY_ID"]),
        ({"AOI_S3_ENDPOINT_URL": "http://127.0.0.1:7480"}, ["AOI_S3_BUCKET"]),
    ],
)
def test_a_partial_s3_configuration_names_what_it_lacks(source: dict[str, str], missing: list[str]) -> None:
    assert missing_s3_keys(source) == missing


def test_without_a_bucket_nothing_is_saved() -> None:
    assert register_s3_blocks({"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}) == []

"""The blocks package: which settings belong together, and the register command refusing a partial group
before it connects anywhere (so nothing is saved and no value is printed)."""

from __future__ import annotations

from pathlib import Path

import pytest

import blocks
from aoi_pipeline import cli


def test_a_complete_or_empty_source_misses_nothing() -> None:
    assert blocks.missing_keys({}) == {}
    assert blocks.missing_keys({"AOI_S3_BUCKET": "models", "NGC_API_KEY": "k"}) == {}


def test_partial_registry_and_s3_groups_name_what_they_lack() -> None:
    missing = blocks.missing_keys({"AOI_REGISTRY_URL": "r.example.com", "AWS_ACCESS_KEY_ID": "id"})

    assert missing == {
        "registry credentials": ["AOI_REGISTRY_USERNAME", "AOI_REGISTRY_PASSWORD"],
        "S3 deliverables bucket": ["AOI_S3_BUCKET", "AWS_SECRET_ACCESS_KEY"],
    }


def test_the_s3_keys_are_block_settings_of_the_register_command() -> None:
    assert {"AOI_S3_BUCKET", "AOI_S3_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY"} <= set(blocks.SOURCE_KEYS)


def test_register_refuses_a_partial_s3_group_without_printing_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in blocks.SOURCE_KEYS:
        monkeypatch.delenv(key, raising=False)
    settings = tmp_path / "blocks.yaml"
    settings.write_text("AWS_ACCESS_KEY_ID: id\nAWS_SECRET_ACCESS_KEY: sentinel-secret-9137\n", encoding="utf-8")

    code = cli.main(["blocks", "register", "--file", str(settings)])

    out, err = capsys.readouterr()
    assert code != 0
    assert "AOI_S3_BUCKET not given" in out + err
    assert "sentinel-secret-9137" not in out + err

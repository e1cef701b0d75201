"""The config's `publish` section: optional, strict, and validated where it is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.errors import ConfigError


def _config(publish: object) -> object:
    return config_from_mapping({"workspace": "/ws", "publish": publish}, source="pipeline.yaml")


def test_publishing_is_off_unless_configured() -> None:
    assert config_from_mapping({"workspace": "/ws"}).publish is None


def test_a_publish_section_names_a_block_and_a_normalised_prefix() -> None:
    publish = _config({"bucket_block": "aoi-models", "prefix": "/models/line-7/"}).publish
    assert (publish.bucket_block, publish.prefix) == ("aoi-models", "models/line-7")
    assert _config({"bucket_block": "aoi-models"}).publish.prefix == ""


@pytest.mark.parametrize(
    ("publish", "key", "fragment"),
    [
        ({}, "publish.bucket_block", "Field required"),
        ({"bucket_block": "AOI_models"}, "publish.bucket_block", "lowercase letters, digits and dashes"),
        ({"bucket_block": "b", "prefix": "a//b"}, "publish.prefix", "not allowed"),
        ({"bucket_block": "b", "bucket": "x"}, "publish.bucket", "Extra inputs"),
        ("aoi-models", "publish", "valid dictionary"),
    ],
)
def test_bad_publish_settings_name_the_key_and_the_fix(publish: object, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(publish)
    problem = caught.value.problems[0]
    assert problem.where == f"pipeline.yaml key {key}"
    assert fragment in problem.what
    assert problem.fix


def test_the_publish_section_loads_from_yaml(tmp_path: Path) -> None:
    from aoi_pipeline.config import load_config

    path = tmp_path / "pipeline.yaml"
    path.write_text("workspace: ws\npublish:\n  bucket_block: aoi-models\n  prefix: nightly\n", encoding="utf-8")
    assert load_config(path).publish.prefix == "nightly"

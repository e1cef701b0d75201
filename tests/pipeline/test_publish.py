"""Publishing without a bucket: settings, which run, what is published, and the run-state record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aoi_pipeline.config import PublishSettings, config_from_mapping
from aoi_pipeline.errors import PublishError
from aoi_pipeline.pipeline.layout import PipelineRecord, RunLayout
from aoi_pipeline.pipeline.publish import (
    deliverable_paths,
    publish_run,
    record_publish_event,
    run_directory,
    settings_for,
)


def _config(tmp_path: Path, **publish: str) -> object:
    data: dict[str, object] = {"workspace": str(tmp_path / "ws"), "results_root": str(tmp_path / "results")}
    if publish:
        data["publish"] = publish
    return config_from_mapping(data)


def test_settings_come_from_the_config_with_command_line_values_on_top(tmp_path: Path) -> None:
    config = _config(tmp_path, bucket_block="aoi-models", prefix="line7")
    assert settings_for(config) == PublishSettings(bucket_block="aoi-models", prefix="line7")
    assert settings_for(config, prefix="") == PublishSettings(bucket_block="aoi-models", prefix="")
    assert settings_for(config, bucket_block="other") == PublishSettings(bucket_block="other", prefix="line7")
    assert settings_for(None, bucket_block="b", prefix="/x/") == PublishSettings(bucket_block="b", prefix="x")


def test_without_a_block_anywhere_the_error_says_where_to_name_one(tmp_path: Path) -> None:
    with pytest.raises(PublishError) as caught:
        settings_for(_config(tmp_path))
    assert "publish.bucket_block" in caught.value.problems[0].what
    assert "--bucket-block" in caught.value.problems[0].fix


def test_a_bad_prefix_on_the_command_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="not allowed"):
        settings_for(None, bucket_block="b", prefix="a/../b")


def test_a_run_is_found_by_directory_or_by_name_under_the_results_root(tmp_path: Path) -> None:
    config = _config(tmp_path)
    run = tmp_path / "results" / "run_20260101_000000"
    run.mkdir(parents=True)
    assert run_directory(str(run), None).root == run.resolve()
    assert run_directory("run_20260101_000000", config).root == run
    with pytest.raises(PublishError, match="neither a run directory"):
        run_directory("run_19990101_000000", config)


def test_the_checkpoint_published_is_the_one_best_model_json_names(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run_1")
    layout.root.mkdir()
    checkpoint = layout.root / "iter2" / "train" / "model.pth"
    layout.best_model.write_text(json.dumps({"checkpoint": str(checkpoint)}), encoding="utf-8")
    paths = deliverable_paths(layout)
    assert paths["checkpoint"] == checkpoint
    assert paths["approval"] == layout.approval
    assert paths["report"].name == "run_report.html"


def test_an_unfinished_run_is_refused_before_any_bucket_is_touched(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run_1")
    layout.root.mkdir()
    layout.approval.write_text("{}", encoding="utf-8")

    class Untouchable:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the bucket was used ({name}) for an unfinished run")

    with pytest.raises(PublishError) as caught:
        publish_run(layout, PublishSettings(bucket_block="b"), bucket=Untouchable())
    problem = caught.value.problems[0]
    assert problem.where == str(layout.root)
    assert "best_model, inference_spec, report, checkpoint missing" in problem.what


def test_publish_events_accumulate_beside_the_phase_record(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run_1")
    layout.root.mkdir()
    PipelineRecord(layout).mark("handoff", "complete", iteration="iter1")
    record_publish_event(layout, status="error", summary="endpoint down")
    record_publish_event(layout, status="published", summary="published s3://b/run_1/", destination="s3://b/run_1/")
    data = json.loads(layout.pipeline_state.read_text(encoding="utf-8"))
    assert data["phases"]["handoff"]["iteration"] == "iter1"
    assert data["publish"]["status"] == "published"
    assert data["publish"]["destination"] == "s3://b/run_1/"
    assert [event["status"] for event in data["publish"]["events"]] == ["error", "published"]
    PipelineRecord(layout).mark("phase3", "complete")  # a later phase mark keeps the publish record
    assert "publish" in json.loads(layout.pipeline_state.read_text(encoding="utf-8"))

"""Settings a platform would not honour are blockers; a platform that could not be asked is UNKNOWN, a warning."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.pipeline.preflight import StaticProbe
from aoi_pipeline.pipeline.preflight.checks.platform_settings import check_platform_settings


def test_a_kubernetes_run_needs_its_results_inside_the_workspace(ws: Path, make_config, read) -> None:
    outside = ws.parent / "elsewhere"

    problems = check_platform_settings(make_config(ws, platform="kubernetes", results_root=str(outside)))

    assert [problem.where for problem in problems] == ["pipeline config key results_root"]
    assert str(outside) in problems[0].what and "mounts only the workspace volume" in problems[0].what
    read.assert_actionable(problems)
    assert check_platform_settings(make_config(ws, platform="kubernetes")) == []


def test_a_gpu_total_is_refused_on_kubernetes_where_the_pool_sets_it(ws: Path, make_config, read) -> None:
    problems = check_platform_settings(make_config(ws, platform="kubernetes", gpus=4))

    assert [problem.where for problem in problems] == ["pipeline config key gpus"]
    assert "concurrency limit" in problems[0].what and "gpus: auto" in problems[0].fix
    assert check_platform_settings(make_config(ws, platform="kubernetes", gpus=0)) == []
    assert check_platform_settings(make_config(ws, platform="local", gpus=0)) == []


def test_a_kubernetes_section_is_refused_on_another_platform(ws: Path, make_config, preflight, read) -> None:
    report = preflight(ws, platform="docker", kubernetes={"namespace": "aoi"})

    found = read.blockers_at(report, "pipeline config key kubernetes")
    assert found and "platform is 'docker'" in found[0].what
    assert not read.blockers_at(preflight(ws, platform="kubernetes", kubernetes={"namespace": "aoi"}), "kubernetes")


def test_a_slurm_section_is_refused_on_another_platform(ws: Path, preflight, read) -> None:
    report = preflight(ws, platform="docker", slurm={"partition": "gpu"})

    found = read.blockers_at(report, "pipeline config key slurm")
    assert found and "platform is 'docker'" in found[0].what and "set platform: slurm" in found[0].fix
    read.assert_actionable(found)
    assert not read.blockers_at(preflight(ws, platform="slurm", slurm={"partition": "gpu"}), "config key slurm")


def test_images_on_slurm_need_a_container_runner(ws: Path, make_config, read) -> None:
    images = {"train": "/lustre/aoi.sqsh"}

    problems = check_platform_settings(make_config(ws, platform="slurm", images=images))

    assert [problem.where for problem in problems] == ["pipeline config key images"]
    assert "runner none" in problems[0].what and "set slurm.runner to pyxis or apptainer" in problems[0].fix
    read.assert_actionable(problems)
    assert check_platform_settings(make_config(ws, platform="slurm", images=images, slurm={"runner": "pyxis"})) == []
    assert check_platform_settings(make_config(ws, platform="slurm")) == []


def test_a_slurm_value_sbatch_would_reject_blocks_the_run(ws: Path, preflight, read) -> None:
    report = preflight(ws, platform="slurm", slurm={"extra_options": ["--time=10"]})

    found = read.blockers_at(report, "pipeline config key slurm.extra_options[0]")
    assert found and "--time is set by the job variable time_limit" in found[0].what
    assert found[0].fix == "set time_limit instead"


def test_a_platform_that_could_not_be_asked_is_unknown_and_warns_without_blocking(ws: Path, preflight, read) -> None:
    probe = StaticProbe(reachability=(None, "namespace aoi: UNKNOWN (the API server did not answer)"))

    report = preflight(ws, platform="kubernetes", probe=probe)

    assert report.ok, report.blockers
    assert "- Platform: kubernetes: UNKNOWN (namespace aoi: UNKNOWN (the API server did not answer))" in (
        read.section(report, 1)
    )
    assert any(warning.startswith("platform kubernetes: UNKNOWN") for warning in report.warnings)


def test_a_cluster_found_wrong_blocks_with_what_was_seen(ws: Path, preflight, read) -> None:
    seen = "PVC aoi-workspace: WRONG (is Pending, not Bound; kubectl -n default describe pvc aoi-workspace)"

    report = preflight(ws, platform="kubernetes", probe=StaticProbe(reachability=(False, seen)))

    found = read.blockers_at(report, "platform kubernetes")
    assert found and seen in found[0].what
    assert not report.warnings or not any("UNKNOWN" in warning for warning in report.warnings)


def test_tao_k8s_namespace_is_not_read_and_a_warning_says_so(ws: Path, preflight) -> None:
    report = preflight(
        ws, platform="kubernetes", kubernetes={"namespace": "aoi"}, environ={"TAO_K8S_NAMESPACE": "elsewhere"}
    )

    assert report.ok
    assert any(
        warning.startswith("TAO_K8S_NAMESPACE is set but not read: the Jobs go to namespace aoi")
        for warning in report.warnings
    )
    assert "elsewhere" not in "\n".join(report.warnings)
    assert not any("TAO_K8S_NAMESPACE" in w for w in preflight(ws, platform="kubernetes").warnings)

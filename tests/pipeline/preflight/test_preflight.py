"""`run_preflight` as a whole: it reads, asks the probe only what the plan needs, and writes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aoi_pipeline.pipeline.preflight import StaticProbe, run_preflight


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    result = {}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        result[str(path.relative_to(root))] = (path.stat().st_mtime_ns, digest)
    return result


@pytest.mark.parametrize("broken", [False, True])
def test_the_preflight_writes_nothing(ws: Path, make_config, broken: bool) -> None:
    if broken:
        (ws / "kpi" / "testing_set.csv").unlink()
    config = make_config(ws, deft={"max_iterations": 1})
    before = _tree(ws.parent)

    report = run_preflight(config, run_name="run_20250101_000000", environ={}, probe=StaticProbe())

    assert report.ok is not broken
    assert _tree(ws.parent) == before
    assert not config.resolved_results_root.exists()


@pytest.mark.parametrize(
    ("platform", "asked"),
    [
        ("local", [("gpus", ""), ("command", "aoi-changenet")]),
        ("docker", [("gpus", ""), ("platform", "docker"), ("image", "train:1"), ("image", "infer:1")]),
        ("slurm", [("platform", "slurm")]),
        ("kubernetes", [("platform", "kubernetes")]),
    ],
)
def test_the_probe_is_asked_only_what_the_platform_needs(ws: Path, preflight, platform, asked) -> None:
    probe = StaticProbe()

    # Without DEFT iterations no embed or SDG image is needed.
    images = {"train": "train:1", "inference": "infer:1"}
    preflight(ws, probe=probe, platform=platform, images=images, deft={"max_iterations": 0})

    assert probe.asked == asked


def test_the_host_name_comes_from_the_probe(ws: Path, preflight, read) -> None:
    report = preflight(ws, probe=StaticProbe(name="inspection-cell-7"))

    assert "- Host: inspection-cell-7" in read.section(report, 1)


def test_the_host_probe_gets_the_config_so_a_cluster_it_cannot_ask_is_unknown_not_a_blocker(
    ws: Path, make_config, read, tmp_path: Path
) -> None:
    config = make_config(ws, platform="kubernetes", kubernetes={"namespace": "aoi", "image_pull_secret": "ngc"})

    # No kubeconfig and not in a pod: the checks of exactly this config's namespace and Secret are UNKNOWN.
    report = run_preflight(config, run_name="run_20250101_000000", environ={"HOME": str(tmp_path)})

    assert not read.blockers_at(report, "platform")
    shown = read.section(report, 1)
    assert "- Platform: kubernetes: UNKNOWN (namespace aoi: UNKNOWN (no kubeconfig" in shown
    assert "image pull Secret ngc: UNKNOWN" in shown

"""The consolidated pre-flight: nine sections, blockers with where/what/fix, secrets, plan hash, no writes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.config import PipelineConfig, config_from_mapping
from aoi_pipeline.pipeline.preflight import (
    GpuInfo,
    HostProbe,
    PreflightReport,
    run_preflight,
)
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

SECRET = "s3cr3t-Value-9f2c1d"
OTHER_SECRET = "another-s3cr3t-7e1b"


class FakeProbe:
    """Answers the pre-flight's outside questions from fixed data and records what was asked."""

    def __init__(
        self,
        *,
        gpus: Iterable[GpuInfo] = (),
        commands: Iterable[str] = ("aoi-changenet", "visual_changenet"),
        present_images: Iterable[str] = (),
        reachable: tuple[bool, str] = (True, "answers"),
    ) -> None:
        self._gpus = list(gpus)
        self._commands = set(commands)
        self._present = set(present_images)
        self._reachable = reachable
        self.asked_commands: list[str] = []
        self.asked_images: list[str] = []

    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    def command_available(self, name: str) -> bool:
        self.asked_commands.append(name)
        return name in self._commands

    def image_present(self, image: str) -> bool | None:
        self.asked_images.append(image)
        return image in self._present

    def platform_reachable(self, platform: str) -> tuple[bool, str]:
        return self._reachable


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A valid synthetic workspace: 4 rows per set (3 PASS + 1 defect), mining pool included."""
    root = tmp_path / "ws"
    write_workspace(root, SynthSpec(boards=4, size=32, tiles_per_board=4))
    return root


def make_config(ws: Path, **changes: Any) -> PipelineConfig:
    data: dict[str, Any] = {
        "workspace": str(ws),
        "results_root": str(ws / "results"),
        "phase1": {"batch_size": 2},
        "phase3": {"batch_size": 2},
    }
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_mapping(data)


def preflight(
    ws: Path, *, probe: FakeProbe | None = None, environ: Mapping[str, str] | None = None, **changes: Any
) -> PreflightReport:
    return run_preflight(
        make_config(ws, **changes),
        run_name="run_20250101_000000",
        environ=environ or {},
        probe=probe or FakeProbe(),
    )


def blockers_at(report: PreflightReport, fragment: str) -> list[Any]:
    return [problem for problem in report.blockers if fragment in problem.where]


def section(report: PreflightReport, number: int) -> str:
    return "\n".join(report.sections[number - 1].lines)


def assert_actionable(problems: Iterable[Any]) -> None:
    for problem in problems:
        assert problem.where.strip() and problem.what.strip() and problem.fix.strip(), problem


# ------------------------------------------------------------------------------------------- sections


def test_a_valid_workspace_gives_the_nine_sections_in_order_and_no_blocker(ws: Path) -> None:
    report = preflight(ws)

    assert report.ok, report.blockers
    assert [s.number for s in report.sections] == list(range(1, 10))
    expected = (
        "Workspace",
        "Credentials",
        "images",
        "Datasets",
        "Phase 1",
        "Phase 2",
        "Phase 3",
        "Compute",
        "Confirm",
    )
    for section_, word in zip(report.sections, expected, strict=True):
        assert word in section_.title
    markdown, text = report.markdown(), report.text()
    positions = [markdown.index(f"## {n}. {s.title}") for n, s in enumerate(report.sections, start=1)]
    assert positions == sorted(positions)
    text_positions = [text.index(f"{n}. {s.title}") for n, s in enumerate(report.sections, start=1)]
    assert text_positions == sorted(text_positions)
    assert "Approve all three phases?" in section(report, 9)


def test_the_dataset_section_shows_rows_labels_and_zero_leakage_for_every_pair(ws: Path) -> None:
    datasets = section(preflight(ws), 4)

    # write_workspace puts 4 tiles (one board) in each set.
    for name, file in (
        ("training", "training_set.csv"),
        ("kpi", "testing_set.csv"),
        ("mining_pool", "mining_pool.csv"),
    ):
        assert any(
            line.startswith(f"| {name} |") and file in line and "| 4 |" in line for line in datasets.splitlines()
        )
    pairs = [line for line in datasets.splitlines() if " / " in line and line.startswith("|")]
    assert len(pairs) == 6  # every pair of the four sets
    assert all(line.endswith("| 0 |") for line in pairs)
    assert "KPI label distribution: PASS 3 (75.0%)" in datasets


def test_the_text_rendering_is_plain(ws: Path) -> None:
    text = preflight(ws).text()

    assert "**" not in text and "`" not in text
    assert not any(line.lstrip().startswith("|") for line in text.splitlines())
    assert "training / validation" in text


# ------------------------------------------------------------------------------------------- blockers


def test_a_missing_csv_is_a_blocker_and_the_other_sets_are_still_shown(ws: Path) -> None:
    (ws / "train" / "base" / "validation_set.csv").unlink()

    report = preflight(ws)

    assert not report.ok
    found = blockers_at(report, "validation_set.csv")
    assert found
    assert_actionable(found)
    datasets = section(report, 4)
    assert any(line.startswith("| training |") and "| 4 |" in line for line in datasets.splitlines())
    assert any(line.startswith("| validation |") and "missing" in line for line in datasets.splitlines())
    assert "Not ready for approval" in section(report, 9)
    assert "Not ready for approval" in report.text()


def test_leakage_between_training_and_validation_is_a_blocker_and_counted(ws: Path) -> None:
    training = ws / "train" / "base" / "training_set.csv"
    validation = ws / "train" / "base" / "validation_set.csv"
    first_training_row = training.read_text(encoding="utf-8").splitlines()[1]
    validation.write_text(validation.read_text(encoding="utf-8") + first_training_row + "\n", encoding="utf-8")

    report = preflight(ws)

    leaks = [p for p in report.blockers if "same sample" in p.what and "validation" in p.what]
    assert len(leaks) == 1
    assert str(training) in leaks[0].where
    assert_actionable(leaks)
    assert "| training / validation | 1 |" in section(report, 4)


def test_an_unknown_search_key_names_the_config_key_and_the_closest_spec_key(ws: Path) -> None:
    space = {"train.optim.lrr": {"low": 1e-5, "high": 1e-3, "log": True}}

    report = preflight(ws, phase1={"search_space": space})

    found = blockers_at(report, 'phase1.search_space["train.optim.lrr"]')
    assert len(found) == 1
    assert "train.optim.lr " in found[0].fix
    assert_actionable(found)


def test_a_search_range_outside_the_spec_bounds_is_a_blocker(ws: Path) -> None:
    # The class weight of defects must stay within 1..100; the upper corner of this range leaves it.
    space = {"train.classify.cls_weight[1]": {"low": 2.0, "high": 500.0}}

    report = preflight(ws, phase3={"search_space": space})

    found = blockers_at(report, 'phase3.search_space["train.classify.cls_weight[1]"]')
    assert found and "500" in found[0].what


def test_a_bad_spec_override_names_the_config_key(ws: Path) -> None:
    report = preflight(ws, spec_overrides=["train.optim.nope=1"])

    found = blockers_at(report, "spec_overrides")
    assert found and "train.optim.nope" in found[0].where


def test_an_invalid_kpi_target_is_a_blocker(ws: Path) -> None:
    report = preflight(ws, kpi_target="FAR below five")

    assert blockers_at(report, "kpi_target")
    assert report.plan["kpi_target"] is None


def test_a_missing_reference_runtime_is_a_blocker_telling_how_to_install_it(ws: Path) -> None:
    probe = FakeProbe(commands=())

    report = preflight(ws, probe=probe)

    found = blockers_at(report, "runtime")
    assert len(found) == 1
    assert found[0].fix == "install the reference extra: pip install 'aoi-pipeline[reference]'"
    assert probe.asked_commands == ["aoi-changenet"]


def test_the_tao_runtime_needs_visual_changenet(ws: Path) -> None:
    probe = FakeProbe(commands=("aoi-changenet",))

    report = preflight(ws, probe=probe, runtime="tao")

    assert probe.asked_commands == ["visual_changenet"]
    assert blockers_at(report, "runtime")


def test_unset_required_slurm_credentials_are_blockers(ws: Path) -> None:
    report = preflight(ws, platform="slurm", environ={"SLURM_USER": "me"})

    names = {problem.where for problem in report.blockers if "environment variable" in problem.where}
    assert names == {
        "environment variable SLURM_HOSTNAME",
        "environment variable SLURM_PARTITION",
        "environment variables SSH_KEY_PATH / SSH_AUTH_SOCK",
    }
    assert_actionable(report.blockers)
    assert "| SLURM_USER | required by platform slurm | SET |" in section(report, 2)
    assert "| SLURM_HOSTNAME | required by platform slurm | UNSET |" in section(report, 2)


def test_one_ssh_identity_satisfies_the_slurm_group(ws: Path) -> None:
    environ = {
        "SLURM_USER": "me",
        "SLURM_HOSTNAME": "login1",
        "SLURM_PARTITION": "gpu",
        "SSH_AUTH_SOCK": "/s",
    }

    report = preflight(ws, platform="slurm", environ=environ)

    assert not [p for p in report.blockers if "environment variable" in p.where]


def test_an_unset_credential_of_the_config_is_a_blocker_and_a_set_one_is_not(ws: Path) -> None:
    report = preflight(ws, credentials=["MODEL_TOKEN", "OTHER_TOKEN"], environ={"MODEL_TOKEN": "x"})

    assert [p.where for p in report.blockers] == ["environment variable OTHER_TOKEN"]


def test_an_unreachable_platform_is_a_blocker(ws: Path) -> None:
    report = preflight(ws, platform="docker", probe=FakeProbe(reachable=(False, "docker is not on PATH")))

    found = blockers_at(report, "platform docker")
    assert found and "docker is not on PATH" in found[0].what


def test_asking_for_more_gpus_than_exist_is_a_blocker(ws: Path) -> None:
    probe = FakeProbe(gpus=[GpuInfo("NVIDIA L40S", 44.99)])

    report = preflight(ws, probe=probe, gpus=4)

    found = blockers_at(report, "pipeline config key gpus")
    assert len(found) == 1 and "4 GPU(s)" in found[0].what
    assert_actionable(found)


def test_a_job_asking_for_more_gpus_than_the_run_has_is_a_blocker(ws: Path) -> None:
    probe = FakeProbe(gpus=[GpuInfo("NVIDIA L40S", 44.99)])

    report = preflight(ws, probe=probe, gpus_per_job=2)

    assert blockers_at(report, "pipeline config key gpus_per_job")


def test_no_gpu_means_cpu_only_without_a_blocker(ws: Path) -> None:
    report = preflight(ws, probe=FakeProbe(gpus=()))

    assert report.ok
    assert "CPU only" in section(report, 1)
    assert report.plan["gpus"] == {"count": 0, "per_job": 0}


def test_the_batch_size_rule_of_thumb_warns_on_a_24_gb_gpu(ws: Path) -> None:
    small = FakeProbe(gpus=[GpuInfo("NVIDIA RTX A5000", 23.99)])

    too_big = preflight(ws, probe=small, phase1={"batch_size": 16})
    fits = preflight(ws, probe=small, phase1={"batch_size": 8})

    assert any("phase1.batch_size is 16" in warning for warning in too_big.warnings)
    assert not any("phase1.batch_size" in warning for warning in fits.warnings)


# ---------------------------------------------------------------------------------------- mining pool


def test_a_missing_mining_pool_blocks_only_when_the_loop_mines(ws: Path) -> None:
    pool = ws / "augmentation" / "mining_pool" / "mining_pool.csv"
    pool.unlink()

    without_loop = preflight(ws, deft={"max_iterations": 0})
    with_loop = preflight(ws, deft={"max_iterations": 2})

    assert without_loop.ok
    assert "| mining_pool |" in section(without_loop, 4) and "absent" in section(without_loop, 4)
    assert blockers_at(with_loop, str(pool))


def test_a_pool_without_rows_is_a_warning_without_the_loop_and_a_blocker_with_it(ws: Path) -> None:
    pool = ws / "augmentation" / "mining_pool" / "mining_pool.csv"
    pool.write_text(pool.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")

    without_loop = preflight(ws, deft={"max_iterations": 0})
    with_loop = preflight(ws, deft={"max_iterations": 1})

    assert without_loop.ok
    assert any("no rows" in warning for warning in without_loop.warnings)
    assert blockers_at(with_loop, str(pool))


# ------------------------------------------------------------------------------------------- images


def test_docker_images_are_listed_present_or_missing_and_missing_is_no_blocker(ws: Path) -> None:
    config = make_config(ws, platform="docker")
    probe = FakeProbe(present_images=[config.images.train])

    report = preflight(ws, platform="docker", probe=probe, images={"inference": "example.org/infer:1"})

    images = section(report, 3)
    assert f"| train | {config.images.train} | PRESENT |" in images
    assert "| inference | example.org/infer:1 | MISSING |" in images
    assert report.ok
    # Without DEFT iterations no embed or SDG job runs, so their images are not asked about.
    assert sorted(probe.asked_images) == sorted([config.images.train, "example.org/infer:1"])


# -------------------------------------------------------------------------------------------- secrets


def test_secret_values_appear_nowhere_and_do_not_change_the_plan_hash(ws: Path) -> None:
    def run(secret: str) -> PreflightReport:
        environ = {"MODEL_TOKEN": secret, "SLURM_USER": secret, "SSH_KEY_PATH": secret, "NGC_KEY": secret}
        return preflight(ws, platform="slurm", credentials=["MODEL_TOKEN"], environ=environ)

    report = run(SECRET)
    other = run(OTHER_SECRET)

    outputs = [
        report.markdown(),
        report.text(),
        json.dumps(report.plan),
        repr(report.blockers),
        repr(report.warnings),
        repr(report.sections),
    ]
    assert all(SECRET not in output for output in outputs)
    assert "| MODEL_TOKEN | required by the pipeline config (credentials) | SET |" in section(report, 2)
    assert report.plan_hash == other.plan_hash


# ---------------------------------------------------------------------------------------------- plan


def test_the_plan_hash_is_stable_and_ignores_the_run_name(ws: Path) -> None:
    config = make_config(ws)
    first = run_preflight(config, run_name="run_20250101_000000", environ={}, probe=FakeProbe())
    again = run_preflight(config, run_name="run_20250101_000000", environ={}, probe=FakeProbe())
    renamed = run_preflight(config, run_name="run_20260202_121212", environ={}, probe=FakeProbe())

    assert first.plan_hash == again.plan_hash == renamed.plan_hash
    assert "run_2025" not in json.dumps(first.plan)
    assert "run_20260202_121212" in section(renamed, 1)


def test_the_plan_hash_changes_with_a_csv_or_a_budget(ws: Path) -> None:
    before = preflight(ws).plan_hash

    more_trials = preflight(ws, phase1={"recommendations": 4}).plan_hash
    training = ws / "train" / "base" / "training_set.csv"
    header, *rows = training.read_text(encoding="utf-8").splitlines()
    training.write_text("\n".join([header, *reversed(rows)]) + "\n", encoding="utf-8")
    reordered = preflight(ws)

    assert reordered.ok
    assert len({before, more_trials, reordered.plan_hash}) == 3


def test_a_changed_mining_pool_keeps_the_plan_hash(ws: Path) -> None:
    before = preflight(ws, deft={"max_iterations": 1})
    pool = ws / "augmentation" / "mining_pool" / "mining_pool.csv"
    lines = pool.read_text(encoding="utf-8").splitlines()
    pool.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # one row fewer: the pool changed

    after = preflight(ws, deft={"max_iterations": 1})

    assert before.ok and after.ok
    assert after.plan_hash == before.plan_hash


def test_deft_iterations_need_the_results_root_inside_the_workspace(ws: Path) -> None:
    outside = str(ws.parent / "elsewhere")
    report = preflight(ws, results_root=outside, deft={"max_iterations": 1})
    blocker = next(problem for problem in report.blockers if problem.where == "results_root")
    assert outside in blocker.what and "workspace-relative" in blocker.what
    assert "inside the workspace" in blocker.fix
    # Without DEFT iterations nothing is written relative to the workspace, so any results root will do.
    assert preflight(ws, results_root=outside, deft={"max_iterations": 0}).ok


def test_the_plan_covers_spec_csvs_spaces_images_and_gpus(ws: Path) -> None:
    plan = preflight(ws, probe=FakeProbe(gpus=[GpuInfo("NVIDIA L40S", 44.99)])).plan

    csv = ws / "kpi" / "testing_set.csv"
    assert plan["dataset_sha256"]["kpi"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert plan["kpi_target"] == "FAR < 5% at Recall=100%"
    assert len(plan["base_spec_sha256"]) == 64
    phase1_keys = {param["key"] for param in plan["search_spaces"]["phase1"]}
    phase3_keys = {param["key"] for param in plan["search_spaces"]["phase3"]}
    # A warm-started Phase 3 must keep the architecture of the checkpoint it loads.
    assert "model.classify.learnable_difference_modules" in phase1_keys - phase3_keys
    assert plan["gpus"] == {"count": 1, "per_job": 1}
    assert plan["platform"] == "local" and set(plan["images"]) == {"train", "inference"}


def test_the_base_spec_hash_follows_the_spec_overrides(ws: Path) -> None:
    plain = preflight(ws).plan["base_spec_sha256"]
    tuned = preflight(ws, spec_overrides=["train.optim.lr=0.001"]).plan["base_spec_sha256"]

    assert plain != tuned


# ------------------------------------------------------------------------------------------ estimate


def test_the_compute_estimate_shows_unknown_without_minutes(ws: Path) -> None:
    estimate = section(preflight(ws), 8)

    assert "N1 × t_rec + M × t_iter + N3 × t_rec" in estimate
    assert "= unknown" in estimate and "estimates.minutes_per_recommendation" in estimate
    assert " min of compute" not in estimate


def test_the_compute_estimate_adds_the_known_terms(ws: Path) -> None:
    estimates = {"minutes_per_recommendation": 10, "minutes_per_iteration": 30}

    both = section(preflight(ws, estimates=estimates, phase1={"recommendations": 3}, phase3={"recommendations": 2}), 8)
    no_phase1 = section(preflight(ws, estimates=estimates, phase1={"enabled": False}, phase3={"recommendations": 2}), 8)

    # 3 x 10 + (0 iterations + 1 baseline stage) x 30 + 2 x 10 = 80; without Phase 1: 0 + 30 + 20 = 50.
    assert "= 80 min of compute" in both
    assert "= 50 min of compute" in no_phase1


# --------------------------------------------------------------------------------------- read-only


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    result = {}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        result[str(path.relative_to(root))] = (path.stat().st_mtime_ns, digest)
    return result


@pytest.mark.parametrize("broken", [False, True])
def test_the_preflight_writes_nothing(ws: Path, broken: bool) -> None:
    if broken:
        (ws / "kpi" / "testing_set.csv").unlink()
    config = make_config(ws, deft={"max_iterations": 1})
    before = _tree(ws.parent)

    report = run_preflight(config, run_name="run_20250101_000000", environ={}, probe=FakeProbe())

    assert report.ok is not broken
    assert _tree(ws.parent) == before
    assert not config.resolved_results_root.exists()


# ---------------------------------------------------------------------------------------- host probe


def _executable(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    _executable(
        folder,
        "nvidia-smi",
        'echo "0, GPU-aaaa-1111, NVIDIA H100 80GB HBM3, 81559"\necho "1, GPU-bbbb-2222, NVIDIA RTX A5000, 24564"\n',
    )
    _executable(
        folder,
        "docker",
        'for last; do :; done\nif [ "$last" = "have:1" ]; then echo sha256:1; exit 0; fi\n'
        'echo "Error response from daemon: No such image: $last" >&2; exit 1\n',
    )
    return folder


def test_the_host_probe_reads_nvidia_smi_and_honours_cuda_visible_devices(fake_bin: Path) -> None:
    every = HostProbe({"PATH": str(fake_bin)}).gpus()
    second = HostProbe({"PATH": str(fake_bin), "CUDA_VISIBLE_DEVICES": "GPU-bbbb-2222"}).gpus()
    hidden = HostProbe({"PATH": str(fake_bin), "CUDA_VISIBLE_DEVICES": "-1"}).gpus()

    assert [gpu.name for gpu in every] == ["NVIDIA H100 80GB HBM3", "NVIDIA RTX A5000"]
    assert every[0].memory_gib == pytest.approx(81559 / 1024)
    assert second == [GpuInfo("NVIDIA RTX A5000", 24564 / 1024)]
    assert hidden == []


def test_the_host_probe_finds_no_gpu_without_nvidia_smi(tmp_path: Path) -> None:
    assert HostProbe({"PATH": str(tmp_path)}).gpus() == []


def test_the_host_probe_tells_present_and_missing_images(fake_bin: Path, tmp_path: Path) -> None:
    probe = HostProbe({"PATH": str(fake_bin)})

    assert probe.image_present("have:1") is True
    assert probe.image_present("lack:1") is False
    assert HostProbe({"PATH": str(tmp_path / "empty")}).image_present("have:1") is None


def test_the_host_probe_finds_commands_on_path(fake_bin: Path) -> None:
    probe = HostProbe({"PATH": str(fake_bin)})

    assert probe.command_available("docker")
    assert not probe.command_available("surely-not-a-command-here")
    assert probe.platform_reachable("local")[0]
    reachable, seen = HostProbe({"PATH": os.devnull}).platform_reachable("slurm")
    assert not reachable and "sinfo" in seen

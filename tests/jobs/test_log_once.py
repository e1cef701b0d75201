"""Repeated job warnings: shown once per run, every other line passed on, new items of a known warning kept."""

from __future__ import annotations

import threading

from aoi_pipeline.jobs.log_once import OnceWarnings

WARNING = [
    "WARNING: the reference runtime accepts but cannot honour 2 spec key(s):",
    "  - model.backbone.type='c_radio': the reference trains its own CNN",
    "  - export={'onnx_file': '/r/phase1/trial_000/export/m.onnx'}: the reference has no export",
]


def _job(once: OnceWarnings, lines: list[str]) -> list[str]:
    shown: list[str] = []
    log = once.sink(shown.append)
    for line in lines:
        log(line)
    log.flush()
    return shown


def test_the_same_warning_block_of_every_job_is_shown_once_and_other_lines_always():
    once = OnceWarnings()
    first = _job(once, [*WARNING, "epoch 1/2: loss 0.5"])
    # the next job's block differs only in a per-job path inside an item's value
    second = _job(once, [WARNING[0], WARNING[1], WARNING[2].replace("trial_000", "trial_001"), "epoch 1/2: loss 0.4"])
    assert first == [*WARNING, "epoch 1/2: loss 0.5"]
    assert second == ["epoch 1/2: loss 0.4"]


def test_a_new_item_of_a_known_warning_is_shown_under_its_header():
    once = OnceWarnings()
    _job(once, WARNING)
    extra = "  - inference.trt_engine='x.engine': scores with the PyTorch checkpoint"
    header = WARNING[0].replace("2 spec", "3 spec")
    assert _job(once, [header, WARNING[1], extra, "done"]) == [header, extra, "done"]


def test_one_line_warnings_are_deduplicated_by_text_and_a_trailing_one_is_not_lost():
    once = OnceWarnings()
    assert _job(once, ["WARNING: no GPU, running on CPU", "start"]) == ["WARNING: no GPU, running on CPU", "start"]
    assert _job(once, ["WARNING: no GPU, running on CPU", "start"]) == ["start"]
    assert _job(once, ["start", "WARNING: disk almost full"]) == ["start", "WARNING: disk almost full"]


def test_clearing_shows_the_warnings_again_for_the_next_run():
    once = OnceWarnings()
    _job(once, WARNING)
    once.clear()
    assert _job(once, WARNING) == WARNING


def test_parallel_jobs_show_each_item_once_between_them():
    once = OnceWarnings()
    shown: list[str] = []
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            shown.append(line)

    def job() -> None:
        sink = once.sink(log)
        for line in WARNING * 50:
            sink(line)
        sink.flush()

    threads = [threading.Thread(target=job) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(line for line in shown if line.startswith("  - ")) == sorted(WARNING[1:])

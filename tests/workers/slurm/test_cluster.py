"""The pre-flight's cluster check on recorded sinfo output: partition, GPU GRES and time limit."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.workers.slurm.cluster import check_cluster, parse_sinfo

SINFO = (Path(__file__).parent / "recorded" / "sinfo.txt").read_text()


def test_partitions_are_read_with_their_default_limit_and_gpus() -> None:
    partitions = parse_sinfo(SINFO)
    assert sorted(partitions) == ["debug", "short"]
    debug, short = partitions["debug"], partitions["short"]
    assert (debug.default, debug.up, debug.max_minutes, debug.gpus_per_node) == (True, True, None, 2)
    assert (short.default, short.max_minutes) == (False, 5)


def test_a_job_that_fits_passes_and_shows_what_was_seen() -> None:
    ok, seen = check_cluster(parse_sinfo(SINFO), partition="short", gpus=2, time_limit="00:05:00")
    assert ok
    assert seen == "partition short: 1 node(s), gpu:2 per node, max 5 min"


def test_the_default_partition_is_used_when_none_is_named() -> None:
    ok, seen = check_cluster(parse_sinfo(SINFO), partition=None, gpus=1, time_limit="7-00:00:00")
    assert ok
    assert seen.startswith("partition debug:")


def test_a_missing_partition_too_many_gpus_and_too_long_a_limit_are_each_named() -> None:
    partitions = parse_sinfo(SINFO)
    ok, seen = check_cluster(partitions, partition="a100", gpus=1, time_limit=None)
    assert not ok
    assert "partition a100 does not exist (partitions: debug, short)" in seen
    ok, seen = check_cluster(partitions, partition="short", gpus=4, time_limit="10")
    assert not ok
    assert "offer gpu:2 per node but a job asks for 4" in seen
    assert "time limit 10 exceeds the partition's maximum of 5 min" in seen


def test_nodes_in_several_states_add_up_and_a_down_partition_fails() -> None:
    text = (
        "gpu*|up|4:00:00|gpu:a100:8|3|idle\ngpu*|up|4:00:00|gpu:a100:8(S:0-1)|2|mix\ncpu|down|1:00:00|(null)|4|idle\n"
    )
    partitions = parse_sinfo(text)
    assert (partitions["gpu"].nodes, partitions["gpu"].gpus_per_node, partitions["gpu"].max_minutes) == (5, 8, 240)
    ok, seen = check_cluster(partitions, partition="cpu", gpus=1, time_limit=None)
    assert not ok
    assert "partition cpu is not up" in seen
    assert "gpu:0 per node" in seen

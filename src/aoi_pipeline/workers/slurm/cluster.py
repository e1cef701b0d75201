"""Read-only questions to a Slurm cluster before approval: partitions, their time limits and their GPUs.

`SINFO_ARGS` asks sinfo for one line per partition and node state (`%P|%a|%l|%G|%D|%t`); `parse_sinfo`
reads it and `check_cluster` answers whether a job of the given shape can run there: the partition exists
and is up, its nodes offer GPU GRES when GPUs are asked for (at least as many per node), and the time limit
is within the partition's maximum. Nothing here submits or changes anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aoi_pipeline.workers.slurm.sbatch import parse_time_limit

SINFO_ARGS = ("sinfo", "--noheader", "--format=%P|%a|%l|%G|%D|%t")
_GPU_GRES = re.compile(r"gpu(?::[A-Za-z0-9_.-]+)?:(\d+)")


@dataclass(frozen=True)
class Partition:
    """One partition as sinfo shows it (its lines for several node states merged)."""

    name: str
    default: bool
    up: bool
    max_minutes: int | None  # None: no limit
    gpus_per_node: int  # the most any of its nodes offers
    nodes: int


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions by name from `sinfo` run with SINFO_ARGS."""
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        raw, available, limit, gres, nodes, _state = fields
        name = raw.rstrip("*")
        gpus = max((int(count) for count in _GPU_GRES.findall(gres)), default=0)
        try:
            minutes = parse_time_limit(limit)
        except ValueError:
            minutes = None
        seen = partitions.get(name)
        partitions[name] = Partition(
            name=name,
            default=raw.endswith("*"),
            up=available == "up",
            max_minutes=minutes,
            gpus_per_node=max(gpus, seen.gpus_per_node if seen else 0),
            nodes=int(nodes) + (seen.nodes if seen else 0) if nodes.isdigit() else 0,
        )
    return partitions


def check_cluster(
    partitions: dict[str, Partition], *, partition: str | None, gpus: int, time_limit: str | None
) -> tuple[bool, str]:
    """Whether a job asking for `gpus` per node and `time_limit` can run on `partition` (None: the default)."""
    if not partitions:
        return False, "sinfo lists no partition"
    chosen = partitions.get(partition) if partition else next((p for p in partitions.values() if p.default), None)
    if chosen is None:
        known = ", ".join(sorted(partitions))
        return False, f"partition {partition or '(default)'} does not exist (partitions: {known}); set SLURM_PARTITION"
    problems = []
    if not chosen.up:
        problems.append(f"partition {chosen.name} is not up")
    if gpus > chosen.gpus_per_node:
        problems.append(f"its nodes offer gpu:{chosen.gpus_per_node} per node but a job asks for {gpus} GPU(s)")
    limit = _limit_minutes(time_limit)
    if time_limit is not None and limit is None and time_limit.upper() not in ("UNLIMITED", "INFINITE"):
        problems.append(f"time limit {time_limit!r} is not a Slurm time (use minutes or HH:MM:SS)")
    if limit is not None and chosen.max_minutes is not None and limit > chosen.max_minutes:
        problems.append(f"time limit {time_limit} exceeds the partition's maximum of {chosen.max_minutes} min")
    maximum = "no time limit" if chosen.max_minutes is None else f"max {chosen.max_minutes} min"
    seen = f"partition {chosen.name}: {chosen.nodes} node(s), gpu:{chosen.gpus_per_node} per node, {maximum}"
    return (False, f"{seen}; " + "; ".join(problems)) if problems else (True, seen)


def _limit_minutes(time_limit: str | None) -> int | None:
    if time_limit is None:
        return None
    try:
        return parse_time_limit(time_limit)
    except ValueError:
        return None

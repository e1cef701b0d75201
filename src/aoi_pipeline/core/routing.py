"""Routing of the RCA's weak rows to the two data producers: k-NN mining of real pool images and SDG.

A weak row goes to mining when its label exists in the mining pool (PASS false alarms too: similar real PASS
images teach the model what normal looks like) and to SDG when its label is a type the synthesizer paints
(never PASS). Labels are compared case-insensitively in their normalised form; the rows keep their original
spelling. The reference computes a per-type allocation and then lets SDG generate a uniform one; here the
allocation is the product: `num_sdg` is split over the routed SDG types in proportion to their cost at the
RCA's threshold (`sdg_costs`: the FAR a type forces plus the recall it loses; a type costing nothing gets
none), or to their weak rows when no costs are given (largest remainder, the costliest type gets at least
one), sums exactly to `num_sdg`, and is what SDG must generate. A routing that sends nothing anywhere is a hard stop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aoi_pipeline.core.dataset import PASS_LABEL, normalize_label, write_dataset_csv
from aoi_pipeline.core.files import atomic_write_json, atomic_write_text
from aoi_pipeline.errors import ConfigError, DatasetError

# What the procedural SDG paints (aoi_pipeline.synth.defects.DEFECT_TYPES).
DEFAULT_SDG_TYPES = ("open", "short", "mousebite", "spur", "copper", "pin_hole")

MINING_GAPS_CSV = "mining_gaps.csv"
SDG_GAPS_CSV = "sdg_gaps.csv"
ALLOCATION_JSON = "allocation.json"
SUMMARY_TXT = "routing_summary.txt"
REPORT_MD = "Routing_Report.md"


@dataclass(frozen=True)
class Route:
    """Where one label's weak rows go, and how many synthetic samples its type gets."""

    label: str
    weak_rows: int
    to_mining: bool
    to_sdg: bool
    sdg_count: int

    @property
    def routed_to(self) -> str:
        if self.to_mining and self.to_sdg:
            return "mining+SDG"
        if self.to_mining:
            return "mining only"
        return "SDG only" if self.to_sdg else "neither (DROPPED)"


@dataclass(frozen=True)
class RoutingResult:
    """The two routed subsets (rows unchanged), the SDG allocation (positive counts only) and the routes."""

    mining_targets: tuple[dict[str, str], ...]
    sdg_targets: tuple[dict[str, str], ...]
    allocation: dict[str, int]
    routes: tuple[Route, ...]
    dropped: tuple[str, ...]
    columns: tuple[str, ...]
    num_sdg: int
    target_defects: tuple[str, ...]


@dataclass(frozen=True)
class RoutingArtifacts:
    """The files `write_routing` wrote."""

    mining_gaps_csv: Path
    sdg_gaps_csv: Path
    allocation_json: Path
    summary_txt: Path
    report_md: Path


def route_gaps(
    gaps: Sequence[Mapping[str, str]],
    *,
    pool_labels: Iterable[str],
    sdg_types: Iterable[str] = DEFAULT_SDG_TYPES,
    num_sdg: int,
    target_defects: Sequence[str] = (),
    type_costs: Mapping[str, float] | None = None,
    source: str = "RCA gaps table",
) -> RoutingResult:
    """Route every weak row to mining and/or SDG and allocate `num_sdg` over the routed SDG types.

    DatasetError "routing dropped every weak sample" (naming the dropped labels) when neither subset gets a
    row; ConfigError for a negative or non-integer `num_sdg`.
    """
    if isinstance(num_sdg, bool) or not isinstance(num_sdg, int) or num_sdg < 0:
        raise ConfigError.at(
            "deft.num_sdg", f"{num_sdg!r} is not a whole number >= 0", "give the synthetic sample budget, e.g. 20"
        )
    pool = {normalize_label(label) for label in pool_labels}
    synthesizable = {normalize_label(kind) for kind in sdg_types} - {PASS_LABEL}
    targets = tuple(dict.fromkeys(normalize_label(label) for label in target_defects))
    weak_rows = Counter(normalize_label(row.get("label") or "") for row in gaps)
    mining = tuple(dict(row) for row in gaps if normalize_label(row.get("label") or "") in pool)
    sdg = tuple(dict(row) for row in gaps if normalize_label(row.get("label") or "") in synthesizable)
    dropped = tuple(sorted(label for label in weak_rows if label not in pool and label not in synthesizable))
    if not mining and not sdg:
        named = ", ".join(dropped) if dropped else "none (the gaps table has no rows)"
        raise DatasetError.at(
            source,
            f"routing dropped every weak sample; dropped labels: {named}",
            "add real images of these labels to the mining pool, or let SDG paint their types",
        )
    sdg_weights, targets = _sdg_weights(weak_rows, synthesizable, targets, type_costs)
    counts = allocate(num_sdg, sdg_weights, priority=targets)
    routes = tuple(
        Route(label, weak_rows[label], label in pool, label in synthesizable, counts.get(label, 0))
        for label in sorted(weak_rows, key=lambda label: _route_order(label, weak_rows, targets))
    )
    return RoutingResult(
        mining_targets=mining,
        sdg_targets=sdg,
        allocation={label: count for label, count in counts.items() if count > 0},
        routes=routes,
        dropped=dropped,
        columns=tuple(dict.fromkeys(key for row in gaps for key in row)),
        num_sdg=num_sdg,
        target_defects=targets,
    )


def sdg_costs(per_label: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """What each defect type costs the model at the RCA's threshold, in points of error rate: the FAR it forces
    on its own (`forced_far_pct`) plus the recall it loses (its missed rows, per hundred defect rows).

    `per_label` is the RCA's `metrics.json` `per_label` block. Types that are neither missed nor force the
    threshold down cost 0 and get no synthetic samples.
    """
    defects = sum(int(gap.get("total", 0) or 0) for gap in per_label.values())  # type: ignore[call-overload]
    costs = {}
    for label, gap in per_label.items():
        missed = int(gap.get("missed", 0) or 0)  # type: ignore[call-overload]
        forced = float(gap.get("forced_far_pct", 0.0) or 0.0)  # type: ignore[arg-type]
        costs[normalize_label(label)] = forced + (100.0 * missed / defects if defects else 0.0)
    return costs


def _route_order(label: str, weak_rows: Mapping[str, int], targets: Sequence[str]) -> tuple[int, int, str]:
    rank = targets.index(label) if label in targets else len(targets)
    return rank, -weak_rows[label], label


def allocate(total: int, weights: Mapping[str, int], *, priority: Sequence[str] = ()) -> dict[str, int]:
    """Split `total` over `weights` in proportion (largest remainder), summing exactly to `total`.

    Every key appears in the result (ordered by `priority`, then by weight and name). Remainder ties go to
    the key earlier in `priority`, then the heavier, then by name. The first `priority` key among `weights`
    gets at least one when `total` >= 1, taken from the largest share (the lowest-priority one on a tie).
    Empty `weights` give {}; weights must be positive.
    """
    if not weights:
        return {}
    if any(weight <= 0 for weight in weights.values()):
        raise ValueError(f"weights must be positive: {dict(weights)}")
    order = sorted(weights, key=lambda key: _route_order(key, weights, priority))
    whole = sum(weights.values())
    counts = {key: total * weights[key] // whole for key in order}
    left = total - sum(counts.values())
    # Exact integer remainders: numerators over the common denominator `whole`, no float rounding.
    by_remainder = sorted(order, key=lambda key: -(total * weights[key] % whole))
    for key in by_remainder[:left]:
        counts[key] += 1
    top = next((key for key in priority if key in counts), None)
    if top is not None and total >= 1 and counts[top] == 0:
        donor = max(reversed(order), key=lambda key: counts[key])
        counts[donor] -= 1
        counts[top] += 1
    return counts


def write_routing(result: RoutingResult, out_dir: Path) -> RoutingArtifacts:
    """Write both subsets (header kept when empty), the allocation, the summary and the report into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts = RoutingArtifacts(
        mining_gaps_csv=out_dir / MINING_GAPS_CSV,
        sdg_gaps_csv=out_dir / SDG_GAPS_CSV,
        allocation_json=out_dir / ALLOCATION_JSON,
        summary_txt=out_dir / SUMMARY_TXT,
        report_md=out_dir / REPORT_MD,
    )
    write_dataset_csv(artifacts.mining_gaps_csv, result.columns, result.mining_targets)
    write_dataset_csv(artifacts.sdg_gaps_csv, result.columns, result.sdg_targets)
    atomic_write_json(artifacts.allocation_json, result.allocation)
    atomic_write_text(artifacts.summary_txt, routing_summary(result))
    atomic_write_text(artifacts.report_md, routing_report(result))
    return artifacts


def _allocation_text(result: RoutingResult) -> str:
    if not result.allocation:
        return "none"
    return ", ".join(f"{label}={count}" for label, count in result.allocation.items())


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def routing_summary(result: RoutingResult) -> str:
    """routing_summary.txt: totals, both subsets, the allocation and one line per label."""
    total = sum(route.weak_rows for route in result.routes)
    lines = [
        "Weak-sample routing summary",
        f"Total weak samples: {total}",
        f"Mining subset:      {len(result.mining_targets)} -> {MINING_GAPS_CSV}",
        f"SDG subset:         {len(result.sdg_targets)} -> {SDG_GAPS_CSV}",
        f"SDG allocation (num_sdg={result.num_sdg}): {_allocation_text(result)}",
        "Per-label breakdown (count, mining, sdg, sdg_count):",
        *(
            f"  {route.label}: {route.weak_rows} (mining={_yes(route.to_mining)}, sdg={_yes(route.to_sdg)}, "
            f"sdg_count={route.sdg_count})"
            for route in result.routes
        ),
        f"Dropped labels: {', '.join(result.dropped) if result.dropped else 'none'}",
    ]
    return "\n".join(lines) + "\n"


def routing_report(result: RoutingResult) -> str:
    """Routing_Report.md: verdict, inputs, per-label decisions, allocation, dropped labels, actions."""
    total = sum(route.weak_rows for route in result.routes)
    targets = ", ".join(result.target_defects) if result.target_defects else "none given"
    lines = [
        "# Routing of the weak samples",
        "",
        "## Verdict",
        "",
        f"{total} weak rows: {len(result.mining_targets)} go to mining, {len(result.sdg_targets)} to SDG, "
        f"{len(result.dropped)} label(s) dropped. SDG must generate {sum(result.allocation.values())} samples: "
        f"{_allocation_text(result)}.",
        "",
        "## Inputs",
        "",
        f"- Target defect types from the RCA: {targets}",
        f"- SDG budget (num_sdg): {result.num_sdg}",
        "",
        "## Per-label routing decisions",
        "",
        "| label | weak rows | routed to | SDG samples |",
        "|---|---:|---|---:|",
        *(f"| {route.label} | {route.weak_rows} | {route.routed_to} | {route.sdg_count} |" for route in result.routes),
        "",
        "## SDG allocation",
        "",
        "The budget is split over the routed SDG types in proportion to their cost at the RCA's threshold "
        "(forced FAR plus lost recall; without costs, their weak rows), largest remainder, the top type gets "
        "at least one. SDG generates exactly this allocation.",
        "",
        *(
            [f"- {label}: {count}" for label, count in result.allocation.items()]
            or ["- none: no SDG budget or no routed SDG type; SDG is skipped."]
        ),
        "",
        "## Dropped labels",
        "",
        *([f"- {label}: not in the mining pool and not an SDG type" for label in result.dropped] or ["- none"]),
        "",
        "## Recommended actions",
        "",
        *_actions(result),
    ]
    return "\n".join(lines) + "\n"


def _actions(result: RoutingResult) -> list[str]:
    actions = []
    if result.dropped:
        actions.append(
            f"- Add real images of {', '.join(result.dropped)} to the mining pool: no producer covers them now."
        )
    unmined = [route.label for route in result.routes if route.to_sdg and not route.to_mining]
    if unmined:
        actions.append(f"- {', '.join(unmined)} rely on synthetic data only; real pool images would add variety.")
    if any(route.to_sdg for route in result.routes) and not result.allocation:
        actions.append("- Raise num_sdg above 0 to let SDG cover the routed defect types.")
    return actions or ["- None: every weak label reaches at least one producer."]


def _sdg_weights(
    weak_rows: Counter[str],
    synthesizable: set[str],
    targets: tuple[str, ...],
    type_costs: Mapping[str, float] | None,
) -> tuple[dict[str, int], tuple[str, ...]]:
    """What each synthesizable type weighs in the SDG allocation, and the allocation's priority order: its weak
    rows when no costs are given, else its cost, the costliest types first."""
    if type_costs is None:
        return {label: count for label, count in weak_rows.items() if label in synthesizable}, targets
    # In proportion to the cost of each type (micro-points, so `allocate` stays in exact integers);
    # a type that costs nothing gets no synthetic sample however many weak rows it has.
    costs = {normalize_label(label): cost for label, cost in type_costs.items()}
    weights = {
        label: round(costs[label] * 1_000_000)
        for label in weak_rows
        if label in synthesizable and round(costs.get(label, 0.0) * 1_000_000) > 0
    }
    by_cost = tuple(sorted(weights, key=lambda label: (-weights[label], label)))
    return weights, tuple(dict.fromkeys(by_cost + targets))

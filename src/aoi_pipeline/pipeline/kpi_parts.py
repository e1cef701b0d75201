"""The run's KPI split: chosen at the first evaluation, kept in the run state, applied to every KPI inference.

`run_kpi_split` returns the split the run state records, choosing and recording it on first use
(`kpi/confirm_set.csv` when the workspace has one, else the board hash); a run state from before splits
existed, with evaluations already on the whole KPI set, keeps scoring on the whole set. `kpi_eval_csv` is
the CSV every KPI inference scores (the KPI set, plus the confirm set's rows when that is a file of its
own); `write_parts` cuts an inference CSV into its steer and confirm rows. `protected_kpi` is what the
leakage checks compare against: the KPI set and the confirm set together, so neither is ever mined or
trained on. `validate_training_csv` runs those checks on an assembled training CSV.
"""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.core import merge_validation
from aoi_pipeline.core.dataset import DatasetCsv, read_dataset_csv, write_dataset_csv
from aoi_pipeline.core.kpi_split import (
    CONFIRM_SET_SOURCE,
    KpiSplit,
    confirm_set_split,
    hash_split,
    split_rows,
    whole_set_split,
)
from aoi_pipeline.core.leakage import CsvInRoot
from aoi_pipeline.core.rca import read_inference_rows
from aoi_pipeline.core.state import read_state, record_run_fact, state_path
from aoi_pipeline.pipeline.context import RunContext

CONFIRM_SET_FILE = "confirm_set.csv"
STEER_CSV = "inference_steer.csv"
CONFIRM_CSV = "inference_confirm.csv"


def confirm_set_csv(ctx: RunContext) -> Path:
    """Where a workspace names its confirm part: `kpi/confirm_set.csv` beside the KPI set."""
    return ctx.workspace.kpi_csv.parent / CONFIRM_SET_FILE


def choose_split(ctx: RunContext) -> KpiSplit:
    """The split of a new run: the workspace's confirm set when it has one, else the board hash
    (`deft.kpi_split: whole_set` opts out: every KPI row steers and confirms)."""
    if ctx.deft.kpi_split == "whole_set":
        return whole_set_split()
    kpi = read_dataset_csv(ctx.workspace.kpi_csv)
    confirm_csv = confirm_set_csv(ctx)
    if confirm_csv.is_file():
        confirm = read_dataset_csv(confirm_csv)
        return confirm_set_split(kpi.rows, confirm.rows, where=str(confirm_csv))
    return hash_split(kpi.rows, confirm_share=ctx.deft.confirm_share, where=str(ctx.workspace.kpi_csv))


def run_kpi_split(ctx: RunContext) -> KpiSplit:
    """The split the run state records; chosen and recorded on first use (the state is the truth).

    Without a run state (an evaluation outside a run) the split is chosen the same way and not recorded.
    """
    if not state_path(ctx.layout.root).exists():
        return choose_split(ctx)
    state = read_state(ctx.layout.root)
    if "kpi_split" in state:
        return KpiSplit.from_dict(state["kpi_split"])
    evaluated = any(isinstance(entry, dict) and "metric_result" in entry for entry in state["iterations"].values())
    split = whole_set_split() if evaluated else choose_split(ctx)
    record_run_fact(ctx.layout.root, "kpi_split", split.to_dict())
    return split


def kpi_eval_csv(ctx: RunContext, split: KpiSplit) -> Path:
    """The CSV KPI inference scores: the KPI set, with the confirm set's rows added when it is its own file."""
    if split.source != CONFIRM_SET_SOURCE:
        return ctx.workspace.kpi_csv
    target = ctx.layout.root / "inputs" / "kpi_eval.csv"
    if not target.exists():
        kpi = read_dataset_csv(ctx.workspace.kpi_csv)
        confirm = read_dataset_csv(confirm_set_csv(ctx))
        steer_rows, _ = split_rows(kpi.rows, split)
        columns = tuple(dict.fromkeys((*kpi.columns, *confirm.columns)))
        write_dataset_csv(target, columns, [*steer_rows, *confirm.rows])
    return target


def write_parts(inference_csv: Path, split: KpiSplit) -> tuple[Path, Path]:
    """(steer CSV, confirm CSV) of an inference CSV, written beside it."""
    rows = read_inference_rows(inference_csv)
    steer, confirm = split_rows(rows, split)
    columns = tuple(rows[0]) if rows else ("input_path", "golden_path", "label", "object_name", "siamese_score")
    steer_csv, confirm_csv = inference_csv.parent / STEER_CSV, inference_csv.parent / CONFIRM_CSV
    write_dataset_csv(steer_csv, columns, steer)
    write_dataset_csv(confirm_csv, columns, confirm)
    return steer_csv, confirm_csv


def protected_kpi(ctx: RunContext) -> CsvInRoot:
    """The KPI set and the confirm set as one protected CSV for the leakage checks."""
    kpi = read_dataset_csv(ctx.workspace.kpi_csv)
    confirm_csv = confirm_set_csv(ctx)
    if confirm_csv.is_file():
        confirm = read_dataset_csv(confirm_csv)
        columns = tuple(dict.fromkeys((*kpi.columns, *confirm.columns)))
        kpi = DatasetCsv(kpi.path, columns, (*kpi.rows, *confirm.rows))
    return CsvInRoot(kpi, ctx.workspace.images_dir)


def validate_training_csv(ctx: RunContext, combined: Path, report_json: Path) -> None:
    """Check an assembled training CSV against the validation set and the protected KPI sets (leakage, lights,
    images) and write the check's report; raises the merge validation's error when it fails."""
    merge_validation.validate_merge(
        combined,
        workspace_root=ctx.workspace.root,
        validation=CsvInRoot(read_dataset_csv(ctx.workspace.validation_csv), ctx.workspace.images_dir),
        kpi=protected_kpi(ctx),
        lights=ctx.dataset.lights,
        image_ext=ctx.image_ext,
        report_json=report_json,
    )

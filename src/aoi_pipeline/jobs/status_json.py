"""Reading TAO `status.json`: the structured record a TAO action writes while it runs.

The file is JSON Lines: one object per line with `date`, `time`, `status` (STARTED, RUNNING, SUCCESS,
FAILURE, SKIPPED), `message`, usually `epoch`/`max_epoch` and KPIs, which real TAO puts under `kpi` and
sometimes flat at the top level. The reader is liberal in what it accepts (either KPI layout, the older
`validation_loss` spelling, a last line truncated because the job was killed mid-write) and strict in what it
reports: upper-case statuses, integer epochs, float KPIs only.

`epoch` is what TAO's status callback writes: Lightning's `trainer.current_epoch` at the end of an epoch,
the 0-based index of the epoch just finished (with `max_epoch` = num_epochs - 1). It is the same number the
checkpointer puts in `model_epoch_<EEE>_step_<SSS>.pth`, which is what lets a validation be matched to the
checkpoint saved after it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILURE"})
# Flat KPI keys sit beside bookkeeping keys such as `step` or `time_per_epoch`; only these prefixes name one.
_FLAT_KPI_PREFIXES = ("val_", "validation_", "train_", "test_")
_KPI_ALIASES = {"validation_accuracy": "val_acc"}


@dataclass(frozen=True)
class StatusLine:
    """One line of status.json, normalised."""

    status: str
    message: str
    epoch: int | None
    max_epoch: int | None
    kpi: Mapping[str, float] = field(default_factory=dict)


def read_status(path: Path) -> list[StatusLine]:
    """Every readable line of a status.json; [] when the file does not exist.

    Lines that are not JSON objects are skipped: the usual cause is a job killed while writing its last line,
    which must not turn a readable history into an error.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return parse_status_lines(text.splitlines())


def parse_status_lines(raw_lines: Iterable[str]) -> list[StatusLine]:
    """Parse status.json lines already in memory (see `read_status`)."""
    lines = []
    for raw in raw_lines:
        raw = raw.strip()
        if not raw:
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            lines.append(_status_line(record))
    return lines


def final_status(lines: Iterable[StatusLine]) -> str | None:
    """The job's last terminal status (SUCCESS or FAILURE), else the last status written, else None.

    Terminal lines win over later progress lines because TAO keeps logging RUNNING lines (for example from
    forwarded log records) after it has written SUCCESS.
    """
    last: str | None = None
    last_terminal: str | None = None
    for line in lines:
        last = line.status
        if line.status in TERMINAL_STATUSES:
            last_terminal = line.status
    return last_terminal or last


def validation_history(lines: Iterable[StatusLine]) -> list[tuple[int, dict[str, float]]]:
    """(epoch, validation KPIs) for each validation, in epoch order.

    Only `val_*` KPIs on lines that carry an epoch count. TAO writes a validation's KPIs on an
    "Eval metrics generated." line without an epoch, then on the epoch-end line; its status logger keeps
    the last KPI dict and repeats it on every later line, so an epoch whose validation KPIs equal those of
    the previous recorded validation is a repeat, not a new validation (two real validations never agree
    to the last bit). When an epoch is written more than once (a resumed run), its last line wins.
    """
    per_epoch: dict[int, dict[str, float]] = {}
    for line in lines:
        if line.epoch is None:
            continue
        validation = {key: value for key, value in line.kpi.items() if key.startswith("val_")}
        if validation:
            per_epoch[line.epoch] = validation
    history: list[tuple[int, dict[str, float]]] = []
    for epoch in sorted(per_epoch):
        kpis = per_epoch[epoch]
        if history and _same_kpis(history[-1][1], kpis):
            continue
        history.append((epoch, kpis))
    return history


def _same_kpis(left: Mapping[str, float], right: Mapping[str, float]) -> bool:
    if left.keys() != right.keys():
        return False
    # NaN != NaN, yet a repeated NaN loss is still a repeat.
    return all(left[k] == right[k] or (math.isnan(left[k]) and math.isnan(right[k])) for k in left)


def _status_line(record: Mapping[str, Any]) -> StatusLine:
    status = record.get("status")
    message = record.get("message")
    return StatusLine(
        status=str(status).strip().upper() if status not in (None, "") else "UNKNOWN",
        message="" if message is None else str(message),
        epoch=_as_int(record.get("epoch")),
        max_epoch=_as_int(record.get("max_epoch")),
        kpi=_kpis(record),
    )


def _kpis(record: Mapping[str, Any]) -> dict[str, float]:
    kpis: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(key, str) and key.startswith(_FLAT_KPI_PREFIXES):
            _put_kpi(kpis, key, value)
    nested = record.get("kpi")
    if isinstance(nested, Mapping):
        for key, value in nested.items():
            _put_kpi(kpis, str(key), value)
    return kpis


def _put_kpi(kpis: dict[str, float], key: str, value: Any) -> None:
    number = _as_float(value)
    if number is None:
        return
    key = _KPI_ALIASES.get(key, key)
    if key.startswith("validation_"):
        key = "val_" + key.removeprefix("validation_")
    kpis[key] = number


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _as_int(value: Any) -> int | None:
    number = _as_float(value)
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(number)

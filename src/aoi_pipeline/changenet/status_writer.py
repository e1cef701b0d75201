"""TAO-style `status.json`: one JSON object per line, written and flushed as the job goes.

TAO's status logger writes `date` (M/D/YYYY), `time` (H:M:S), `status` (STARTED, RUNNING, SUCCESS, FAILURE),
`verbosity` and `message`, plus `epoch`/`max_epoch`, `time_per_epoch`/`eta` and a `kpi` object where they
apply. The pipeline's job layer reads these lines to follow progress and to tell a failed job from a finished
one, so the reference runtime writes the same fields; `epoch` is TAO's count of completed epochs (1-based),
while checkpoint file names carry the 0-based epoch index, as TAO's do. Each line also carries `timestamp`
(ISO 8601, UTC, microseconds): TAO's `time` has whole seconds only, too coarse to tell a job's start-up
(imports, CUDA initialisation) from its work; readers that know only TAO's fields ignore it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

STARTED, RUNNING, SUCCESS, FAILURE = "STARTED", "RUNNING", "SUCCESS", "FAILURE"
STATUS_FILE = "status.json"


def status_line(status: str, message: str, **fields: Any) -> dict[str, Any]:
    """One status record in TAO's field order; `None` fields are left out, non-finite KPIs become null."""
    now = datetime.now()
    record: dict[str, Any] = {key: value for key, value in fields.items() if value is not None}
    record.update(
        date=f"{now.month}/{now.day}/{now.year}",
        time=f"{now.hour}:{now.minute}:{now.second}",
        status=status,
        verbosity="INFO",
        message=message,
        timestamp=now.astimezone(UTC).isoformat(),
    )
    if "kpi" in record:
        record["kpi"] = {key: _finite_or_none(value) for key, value in record.pop("kpi").items()}
    return record


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def duration(seconds: float) -> str:
    """`0:00:12.345678`, as TAO prints `time_per_epoch` and `eta`."""
    return str(timedelta(seconds=max(0.0, seconds)))


class StatusLog:
    """Appends status lines to `<results_dir>/status.json`, flushing each, and echoes them to `echo`."""

    def __init__(self, results_dir: Path, *, append: bool = False, echo: IO[str] | None = None) -> None:
        self.path = Path(results_dir) / STATUS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if append else "w", encoding="utf-8")
        self._echo = echo

    def write(self, status: str, message: str, **fields: Any) -> dict[str, Any]:
        record = status_line(status, message, **fields)
        text = json.dumps(record)
        self._file.write(text + "\n")
        self._file.flush()
        if self._echo is not None:
            print(text, file=self._echo, flush=True)
        return record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StatusLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_status(path: Path) -> list[dict[str, Any]]:
    """Every status record of a `status.json` file (or of the one inside a results directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / STATUS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

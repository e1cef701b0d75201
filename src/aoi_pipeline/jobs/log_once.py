"""Job output with each repeated warning shown once per pipeline run.

Every job of a run prints the same runtime warnings (the reference runtime lists, in every job, the TAO spec
keys it accepts but cannot honour: five lines per job, a sixth of a demo's log). `OnceWarnings` is shared by
the jobs of one run; each job's output goes through its own `sink`, which passes every line on except the
items of a warning block already shown. A warning block is a line starting with `WARNING:` followed by
indented `- item` lines; an item is identified by its text up to the first `=` or `:` (a spec key), so an
item whose value names a per-job path is still the same item. The block's first line is shown only when at
least one of its items is new. Thread-safe: parallel jobs stream from their own threads.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

_ITEM = re.compile(r"^\s+- ([^=:]+)")


class OnceWarnings:
    """The warning items the jobs of one run have already shown."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def first_time(self, header: str, item: str) -> bool:
        """True the first time `item` of the warning `header` is offered (and records it)."""
        key = (_warning_kind(header), item.strip())
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True

    def sink(self, log: Callable[[str], None]) -> JobLog:
        """A per-job log function: `log` for every line but the warnings and warning items shown before."""
        return JobLog(self, log)


class JobLog:
    """One job's output through its run's `OnceWarnings`; call `flush` when the job's output ends."""

    def __init__(self, once: OnceWarnings, log: Callable[[str], None]) -> None:
        self._once, self._log = once, log
        self._header: str | None = None  # the first line of the warning block being read
        self._had_items = False
        self._header_shown = False

    def __call__(self, line: str) -> None:
        item = _ITEM.match(line)
        if self._header is not None and item is not None:
            self._had_items = True
            if self._once.first_time(self._header, item.group(1)):
                if not self._header_shown:
                    self._log(self._header)
                    self._header_shown = True
                self._log(line)
            return
        self.flush()
        if line.startswith("WARNING:"):
            self._header, self._had_items, self._header_shown = line, False, False
            return
        self._log(line)

    def flush(self) -> None:
        """End the warning block being read; a one-line warning is shown the first time its text is seen."""
        header, self._header = self._header, None
        if header is not None and not self._had_items and self._once.first_time(header, header):
            self._log(header)


def _warning_kind(header: str) -> str:
    # "WARNING: the reference runtime accepts but cannot honour 4 spec key(s):" and the same with 3 keys
    # are one kind of warning; the count differs by action.
    return re.sub(r"\d+", "N", header)

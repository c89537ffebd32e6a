"""`energy-tracker import FILE.csv --device ID`: backfill one device's history from a CSV file.

The file has a header row naming the columns: `ts` (RFC 3339 with an offset, or epoch
milliseconds) and `power_w` and/or `energy_wh`, optionally `voltage_v` and `current_a`; other
columns are ignored (and named once). Every row is validated exactly like an HTTP reading (the
same model, the same recorder rules: a device that exists and is enabled, a timestamp inside the
retention window), and the rows go straight onto `energy-readings` in batches, where the usage
service turns them into buckets as for any reading.

Bad rows: the whole file is checked first, and if any row is bad nothing is imported and every bad
line is listed. A backfill with holes is harder to repair than a refused one: fix the lines and
run it again. `--skip-bad` imports the good rows anyway and lists the bad ones. Running an import
twice is harmless: readings are stored once per (device, ts).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from energy_tracker.core.events import Reading
from energy_tracker.services.ingestion.recorder import ReadingRecorder
from energy_tracker.services.ingestion.schemas import (
    MAX_BATCH,
    ONE_READING,
    NoMeasurement,
    to_reading,
)

NUMERIC_COLUMNS = ("power_w", "energy_wh", "voltage_v", "current_a")
MAX_LISTED = 1000
"""Bad lines remembered for the report; beyond it they are only counted."""

Progress = Callable[[str, int, int], None]
"""Called with (phase: "checking" or "importing", characters of the file read, rows read)."""


class CsvError(Exception):
    """The file as a whole cannot be imported (no header, no ts column, unknown device)."""


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    bad_count: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), first MAX_LISTED
    ignored_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def refuse(self, line: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_LISTED:
            self.bad.append((line, reason))


class CsvImport:
    """One file into one device, through the recorder's checks and publish."""

    def __init__(
        self, recorder: ReadingRecorder, path: Path, device_id: str, batch: int = MAX_BATCH
    ) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise CsvError(f"--batch must be between 1 and {MAX_BATCH}")
        self.recorder = recorder
        self.path = path
        self.device_id = device_id
        self.batch = batch

    async def run(self, *, skip_bad: bool, progress: Progress | None = None) -> ImportReport:
        """Check the file (unless `skip_bad`), then publish its good rows; see the module doc."""
        ctx = (await self.recorder.directory.contexts([self.device_id])).get(self.device_id)
        if ctx is None or not ctx.enabled:
            raise CsvError(f"device {self.device_id} is unknown or disabled")
        started = time.perf_counter()
        if not skip_bad:
            checked = await self._pass("checking", progress)
            if checked.bad_count:
                checked.seconds = time.perf_counter() - started
                return checked
        report = await self._pass("importing", progress)
        report.seconds = time.perf_counter() - started
        return report

    async def _pass(self, phase: str, progress: Progress | None) -> ImportReport:
        publish = phase == "importing"
        report = ImportReport()
        pending: list[tuple[int, Reading]] = []
        read = 0
        for line, item, read in self._rows(report):
            report.rows += 1
            if isinstance(item, str):
                report.refuse(line, item)
            else:
                pending.append((line, item))
            if len(pending) >= self.batch:
                await self._flush(pending, report, publish)
                pending = []
            if progress is not None and report.rows % 1000 == 0:
                progress(phase, read, report.rows)
        if pending:
            await self._flush(pending, report, publish)
        if progress is not None:
            progress(phase, read, report.rows)
        return report

    async def _flush(
        self, pending: list[tuple[int, Reading]], report: ImportReport, publish: bool
    ) -> None:
        problems = {p["index"]: p for p in await self.recorder.check(pending)}
        for line, problem in sorted(problems.items()):
            report.refuse(line, f"{problem['field']}: {problem['message']}")
        if publish:
            report.imported += await self.recorder.publish(
                r for line, r in pending if line not in problems
            )

    def _rows(self, report: ImportReport) -> Iterator[tuple[int, Reading | str, int]]:
        """(line number, the reading or why the row is bad, characters read so far)."""
        read = 0
        with self.path.open(newline="", encoding="utf-8-sig") as f:

            def counted() -> Iterator[str]:
                nonlocal read
                for text in f:
                    read += len(text)
                    yield text

            rows = csv.reader(counted())
            header = [h.strip().lower() for h in next(rows, [])]
            if "ts" not in header or not {"power_w", "energy_wh"} & set(header):
                raise CsvError(
                    f"{self.path}: the first line must name the columns, with ts and "
                    f"power_w and/or energy_wh (found {header or 'nothing'})"
                )
            columns = {n: header.index(n) for n in ("ts", *NUMERIC_COLUMNS) if n in header}
            report.ignored_columns = [h for h in header if h not in columns]
            width = len(header)
            for cells in rows:
                if not cells:
                    continue
                if len(cells) != width:
                    yield rows.line_num, f"{len(cells)} cells, the header has {width}", read
                    continue
                yield rows.line_num, self._reading(cells, columns), read

    def _reading(self, cells: list[str], columns: dict[str, int]) -> Reading | str:
        ts = cells[columns["ts"]].strip()
        data: dict[str, object] = {"ts": int(ts) if ts.isdigit() else ts}
        for name in NUMERIC_COLUMNS:
            cell = cells[columns[name]].strip() if name in columns else ""
            if cell:
                try:
                    data[name] = float(cell)
                except ValueError:
                    return f"{name}: {cell!r} is not a number"
        try:
            return to_reading(ONE_READING.validate_python(data), self.device_id)
        except NoMeasurement as exc:
            return str(exc)
        except ValidationError as exc:
            return "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][:1]) or 'row'}: {e['msg']}"
                for e in exc.errors(include_url=False)[:3]
            )

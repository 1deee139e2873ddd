"""Benchmark results: one record per measurement, merged into ``bench/results.json`` and the results table of
``docs/benchmarks.md`` (between the ``bench:start`` / ``bench:end`` markers).

A record may carry ``notes``: a list of texts a person wrote about particular runs (each names the run it is
about). The benchmarks never write notes; :func:`save` keeps a record's notes when it replaces its figures.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
TABLE_DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Result:
    """One measurement beside its baseline. ``ratio`` is how many times better than the baseline."""

    name: str
    value: float
    unit: str
    baseline: float | None
    ratio: float | None
    target: str
    command: str
    detail: str = ""

    @classmethod
    def compare(
        cls,
        name: str,
        value: float,
        unit: str,
        baseline: float | None,
        *,
        higher_is_better: bool,
        target: str,
        command: str,
        detail: str = "",
    ) -> Result:
        """A result whose ratio is computed so that > 1 always means better than the baseline."""
        ratio = None
        if baseline:
            ratio = (value / baseline) if higher_is_better else (baseline / value if value else None)
        return cls(
            name,
            round(value, 3),
            unit,
            None if baseline is None else round(baseline, 3),
            None if ratio is None else round(ratio, 1),
            target,
            command,
            detail,
        )


def save(results: list[Result]) -> None:
    """Merge ``results`` into results.json (by name, keeping each record's ``notes``) and rewrite the table."""
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": []}
    by_name = {r["name"]: r for r in stored.get("results", [])}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    for result in results:
        notes = by_name.get(result.name, {}).get("notes")
        by_name[result.name] = {**asdict(result), "measured_at_utc": stamp, **({"notes": notes} if notes else {})}
    stored = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {_cores()} cores".strip(),
        "results": sorted(by_name.values(), key=lambda r: r["name"]),
    }
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
    _write_table(stored["results"])


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"


def _write_table(rows: list[dict]) -> None:
    """Rewrite the results table between the markers of :data:`TABLE_DOC` (nothing when they are missing)."""
    if not TABLE_DOC.exists():
        return
    text = TABLE_DOC.read_text()
    if START not in text or END not in text:
        return
    lines = [
        "| benchmark | mmaker | baseline | ratio | target | measured (UTC) | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {_fmt(r['value'])} {r['unit']} | {_fmt(r['baseline'])} {r['unit']} | "
            f"{_fmt(r['ratio'])}× | {r['target']} | {r['measured_at_utc']} | `{r['command']}` |"
        )
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    TABLE_DOC.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)

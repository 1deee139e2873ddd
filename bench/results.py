"""Benchmark results: one record per measurement, merged into ``bench/results.json`` and the README."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
README = ROOT / "README.md"
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
    """Merge ``results`` into results.json (by name) and rewrite the README table."""
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": []}
    by_name = {r["name"]: r for r in stored.get("results", [])}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    for result in results:
        by_name[result.name] = {**asdict(result), "measured_at_utc": stamp}
    stored = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {_cores()} cores".strip(),
        "results": sorted(by_name.values(), key=lambda r: r["name"]),
    }
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
    _write_readme_table(stored["results"])


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"


def _write_readme_table(rows: list[dict]) -> None:
    if not README.exists():
        return
    text = README.read_text()
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
    README.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)

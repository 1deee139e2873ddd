"""bench.results: records merged by name, people's notes kept, the table rewritten in docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import results
from bench.results import END, START, Result


def _result(name: str, value: float) -> Result:
    return Result.compare(name, value, "ms", 2 * value, higher_is_better=False, target="≤ 10 ms", command="cmd")


def test_save_keeps_notes_and_rewrites_only_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = tmp_path / "results.json"
    doc = tmp_path / "benchmarks.md"
    stored.write_text(json.dumps({"machine": "m", "results": [
        {"name": "a", "value": 1.0, "unit": "ms", "notes": ["2026-01-01 run: why a was slow"]},
        {"name": "b", "value": 2.0, "unit": "ms", "baseline": None, "ratio": None, "target": "report",
         "command": "cmd", "detail": "", "measured_at_utc": "2026-01-01 00:00:00"},
    ]}))  # fmt: skip
    doc.write_text(f"# Benchmarks\n\nbefore\n\n{START}\nold table\n{END}\n\nafter\n")
    monkeypatch.setattr(results, "RESULTS", stored)
    monkeypatch.setattr(results, "TABLE_DOC", doc)

    results.save([_result("a", 5.0), _result("c", 3.0)])

    saved = json.loads(stored.read_text())
    by_name = {r["name"]: r for r in saved["results"]}
    assert sorted(by_name) == ["a", "b", "c"]
    assert by_name["a"]["value"] == 5.0 and by_name["a"]["ratio"] == 2.0
    assert by_name["a"]["notes"] == ["2026-01-01 run: why a was slow"]
    assert "notes" not in by_name["c"] and by_name["b"]["value"] == 2.0
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n\n" + START) and text.endswith(END + "\n\nafter\n")
    assert "old table" not in text
    assert "| a | 5.0 ms | 10.0 ms | 2.0× | ≤ 10 ms |" in text and "| b | 2.0 ms | — ms | —× | report |" in text


def test_the_repository_results_and_table_are_where_save_looks() -> None:
    saved = json.loads(results.RESULTS.read_text())
    for record in saved["results"]:
        notes = record.get("notes", [])
        assert isinstance(notes, list) and all(isinstance(n, str) and n for n in notes), record["name"]
    text = results.TABLE_DOC.read_text()
    assert text.count(START) == 1 and text.count(END) == 1 and text.index(START) < text.index(END)
    table = text.split(START, 1)[1].split(END, 1)[0]
    assert all(f"| {record['name']} |" in table for record in saved["results"])

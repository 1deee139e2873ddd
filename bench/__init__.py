"""Benchmarks, each run side by side with a baseline in the same process run.

``make bench`` (``python -m bench [NAME …]``) runs them, writes ``bench/results.json`` and rewrites the
results table of ``docs/benchmarks.md`` between the ``bench:start`` / ``bench:end`` markers.
"""

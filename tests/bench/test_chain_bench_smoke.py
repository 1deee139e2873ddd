"""The chain benchmark's two sides write the same epoch (so the comparison is fair), on a small chain."""

from __future__ import annotations

import redis

from bench.chain_decompose import _baseline, _mmaker, spx_like_chain


def test_mmaker_and_the_baseline_write_the_same_keys(r: redis.Redis) -> None:
    rows = spx_like_chain(400)
    _mmaker(r, rows, 1_900_000_000_000)
    ours = {k: r.type(k) for k in r.scan_iter(match="epoch:*", count=10_000)}
    hashes = {k: r.hgetall(k) for k, kind in ours.items() if kind == "hash"}
    r.flushdb()
    _baseline(r, rows)
    theirs = {k: r.type(k) for k in r.scan_iter(match="epoch:*", count=10_000)}
    assert ours == theirs and len(ours) == 2 * len(rows) + 7  # contract hashes, 6 indexes, the counter records
    assert {k: r.hgetall(k) for k in hashes} == hashes

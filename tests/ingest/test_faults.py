"""Redis lost mid-batch: ``python -m ingest`` against the simulator while its redis-server is killed (-9) and
started again from its append-only file. The process logs and counts the failure, keeps its batch, reconnects
and resumes; a batch is one Lua call, so nothing lands half-written, and nothing is lost or counted twice.
"""

from __future__ import annotations

import time

from fabric import keys
from tests.support.ingest import U, ingest_running, status, trades_in_redis
from tests.support.waiting import wait_for


def test_redis_lost_mid_batch_is_retried_until_it_lands() -> None:
    with ingest_running(seed=11, aof=True) as run:
        r, proc, log, server, sim = run.r, run.proc, run.log, run.server, run.sim
        before, rejects_before = status(r)
        server.kill()  # mid-batch: at 3,000 events/s a batch is always on its way
        time.sleep(1.5)
        assert proc.poll() is None, log.read_text()
        server.start()  # the same port, every acknowledged write back from the append-only file
        wait_for(lambda: status(r)[0].get("redis_errors", 0) > 0
                 and status(r)[0].get("trades_applied", 0) > before.get("trades_applied", 0) + 50, 30,
                 "ingest counting the failure and committing again", log)  # fmt: skip
        assert proc.poll() is None and r.hget(keys.ingest_status(), "connected") == "1"
        assert "redis write failed" in log.read_text(errors="replace")

        # quiesce, then compare what ingest says it committed with what Redis holds
        sim.admin("/admin/tick_rate?events_per_s=0")
        seen: list[int] = []

        def settled() -> bool:
            seen.append(status(r)[0].get("events_committed", 0))
            return len(seen) > 30 and len(set(seen[-30:])) == 1

        wait_for(settled, 30, "ingest idle", log)
        counters, rejects = status(r)
        held = trades_in_redis(r, run.epoch)
        # Every trade ingest counted as applied is in Redis exactly once. Redis can hold more only when a
        # batch landed but its reply was lost with the connection: the retry is then dropped by sequence
        # number (counted out_of_sequence) instead of being applied twice.
        replayed = rejects.get("out_of_sequence", 0) - rejects_before.get("out_of_sequence", 0)
        assert counters["trades_applied"] <= held <= counters["trades_applied"] + replayed, (held, counters, rejects)
        assert counters["trades_applied"] > before.get("trades_applied", 0)


def test_a_batch_redis_refuses_for_good_is_dropped_and_the_feed_goes_on() -> None:
    """A corrupted key of the epoch (its dirty set replaced by a string: the script refuses every call, before
    any write, with WRONGTYPE) makes every batch fail. Retrying such a batch forever would stall the feed:
    after three refusals it is dropped, counted and logged — its events as dropped, never as committed; once
    the key is repaired, batches land again."""
    with ingest_running(seed=12) as run:
        r, proc, log = run.r, run.proc, run.log
        dirty = keys.dirty_contracts(U, run.epoch)
        r.delete(dirty)
        r.set(dirty, "corrupted")  # every batch of the epoch is refused
        wait_for(lambda: status(r)[0].get("batches_dropped", 0) >= 2, 60, "refused batches dropped", log)
        assert proc.poll() is None, log.read_text()
        assert "dropping its" in log.read_text(errors="replace")
        before, rejects_before = status(r)
        wait_for(lambda: status(r)[0].get("batches_dropped", 0) > before["batches_dropped"], 60,
                 "one more refused batch dropped", log)  # fmt: skip
        after, rejects_after = status(r)
        # nothing lands: only a batch of rejected events alone (no script call) could count as committed
        grown = after.get("events_committed", 0) - before.get("events_committed", 0)
        assert grown <= sum(rejects_after.values()) - sum(rejects_before.values()), (before, after)
        assert after["events_dropped"] > before["events_dropped"] > 0, (before, after)

        r.delete(dirty)  # repaired: the feed lands again
        applied = status(r)[0].get("trades_applied", 0)
        wait_for(lambda: status(r)[0].get("trades_applied", 0) > applied + 20, 60, "trades landing again", log)
        assert proc.poll() is None

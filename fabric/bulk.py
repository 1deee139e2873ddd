"""Bulk MULTI/EXEC writes for chain-sized batches (tens of thousands of commands).

redis-py's pipeline walks every argument of every command in Python before packing; for a 20,000-contract
epoch (a million arguments) that costs more than Redis takes to execute the whole transaction. Here each
command is packed by hiredis as it is produced and sent in chunks, so Redis queues commands while the
next chunk is still being built, and the replies are parsed by hiredis in one pass.

Atomicity is Redis's: commands are queued between MULTI and EXEC and run together; a command that
cannot be queued aborts the whole transaction (EXECABORT), and a connection lost before EXEC discards
it. Either every command of the batch is applied or none is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import hiredis
from redis import Redis
from redis.exceptions import ResponseError

Command = Sequence[str | bytes | int | float]
CHUNK_COMMANDS = 2_000
_RECV_BYTES = 1 << 20


class TransactionError(ResponseError):
    """A bulk transaction that Redis refused or in which a command failed."""


def execute_transaction(client: Redis, commands: Iterable[Command]) -> list[object]:
    """Run ``commands`` as one MULTI/EXEC transaction; returns EXEC's replies (raises on any error)."""
    replies = _run(client, itertools.chain([("MULTI",)], commands, [("EXEC",)]), encoding=None)
    queued, result = replies[:-1], replies[-1]
    for reply in queued:
        if isinstance(reply, hiredis.ReplyError):
            raise TransactionError(f"command refused, transaction aborted: {reply}")
    if not isinstance(result, list):
        raise TransactionError(f"EXEC failed: {result!r}")
    for reply in result:
        if isinstance(reply, hiredis.ReplyError):
            raise TransactionError(f"command failed inside the transaction: {reply}")
    return result


def execute_pipeline(client: Redis, commands: Iterable[Command]) -> list[object]:
    """Run ``commands`` pipelined (no transaction) and return their replies in order, decoded as text.

    For chain-sized reads (tens of thousands of HMGETs): packed by hiredis, sent in chunks, parsed by
    hiredis. An error reply is returned in place (a ``hiredis.ReplyError``), not raised.
    """
    return _run(client, commands, encoding="utf-8")


def _run(client: Redis, commands: Iterable[Command], *, encoding: str | None) -> list[object]:
    """Pack ``commands`` as they come, send them in chunks on one pooled connection, read every reply."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        pack = hiredis.pack_command
        chunk: list[bytes] = []
        sent = 0
        for command in commands:
            chunk.append(pack(tuple(command)))
            if len(chunk) >= CHUNK_COMMANDS:
                connection.send_packed_command([b"".join(chunk)], check_health=False)
                sent += len(chunk)
                chunk = []
        if chunk:
            connection.send_packed_command([b"".join(chunk)], check_health=False)
            sent += len(chunk)
        return _read_replies(connection, sent, encoding=encoding) if sent else []
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


def _read_replies(connection: object, count: int, encoding: str | None = None) -> list[object]:
    """Read ``count`` replies straight off the socket with a hiredis reader."""
    sock = connection._sock  # type: ignore[attr-defined]
    if sock is None:
        raise ConnectionError("connection closed before the replies arrived")
    reader = hiredis.Reader(encoding=encoding) if encoding else hiredis.Reader()
    buffer = bytearray(_RECV_BYTES)
    replies: list[object] = []
    while len(replies) < count:
        size = sock.recv_into(buffer)
        if size == 0:
            raise ConnectionError("Redis closed the connection during a bulk transaction")
        reader.feed(buffer, 0, size)
        while (reply := reader.gets()) is not False:
            replies.append(reply)
    return replies

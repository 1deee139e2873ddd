"""Bulk MULTI/EXEC writes for chain-sized batches (tens of thousands of commands).

redis-py's pipeline walks every argument of every command in Python before packing; for a 20,000-contract
epoch (a million arguments) that costs more than Redis takes to execute the whole transaction. Here each
command is packed by hiredis as it is produced and sent in chunks, so Redis queues commands while the
next chunk is still being built, and the replies are parsed by hiredis in one pass.

Atomicity is Redis's: commands are queued between MULTI and EXEC and run together; a command that
cannot be queued aborts the whole transaction (EXECABORT), and a connection lost before EXEC discards
it. Either every command of the batch is applied or none is.

On a Redis Cluster (a ``RedisCluster`` client) the batch is sent to the node that owns the slot of the first
command's key, on that node's own connection pool; every command of a batch names keys of one underlying
(one ``{U}`` hash tag, one slot), and Redis refuses a batch that does not (CROSSSLOT). A slot that moved
(MOVED/ASK) fails the batch as any refused command does (a refused transaction applies nothing) and
refreshes the client's slot map, so the next run goes to the new owner. The single-Redis path is unchanged.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence

import hiredis
from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError


class Pieces(tuple):
    """One argument sent as the concatenation of these bytes-like pieces, never joined or copied in memory:
    a view with its version spliced in front, a whole tiles string (one memoryview)."""


Command = Sequence[str | bytes | memoryview | Pieces | int | float]
CHUNK_COMMANDS = 2_000
#: in a command carrying a Pieces argument, other bytes arguments longer than this are sent uncopied too
BIG_ARGUMENT = 1 << 16
_RECV_BYTES = 1 << 20


class TransactionError(ResponseError):
    """A bulk transaction that Redis refused or in which a command failed."""


def execute_transaction(client: Redis | RedisCluster, commands: Iterable[Command]) -> list[object]:
    """Run ``commands`` as one MULTI/EXEC transaction; returns EXEC's replies (raises on any error)."""
    if isinstance(client, RedisCluster):
        return _on_cluster(client, commands, execute_transaction)
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


def execute_pipeline(client: Redis | RedisCluster, commands: Iterable[Command], *, decode: bool = True
                     ) -> list[object]:  # fmt: skip
    """Run ``commands`` pipelined (no transaction) and return their replies in order, decoded as text (as
    bytes with ``decode=False``: binary values).

    For chain-sized reads (tens of thousands of HMGETs): packed by hiredis, sent in chunks, parsed by
    hiredis. An error reply is returned in place (a ``hiredis.ReplyError``), not raised.
    """
    if isinstance(client, RedisCluster):
        return _on_cluster(client, commands, functools.partial(execute_pipeline, decode=decode))
    return _run(client, commands, encoding="utf-8" if decode else None)


def _on_cluster(
    cluster: RedisCluster,
    commands: Iterable[Command],
    execute: Callable[[Redis, Iterable[Command]], list[object]],
) -> list[object]:
    """Run ``execute`` on the client of the node owning the slot of the first command's key.

    The commands still stream: only the first is looked at before sending.
    """
    stream: Iterator[Command] = iter(commands)
    first = next(stream, None)
    if first is None:
        return []
    node = cluster.get_redis_connection(cluster.get_node_from_key(first_key(first)))
    try:
        replies = execute(node, itertools.chain([first], stream))
    except TransactionError as exc:
        if _moved(str(exc)):
            cluster.nodes_manager.initialize()
        raise
    if any(isinstance(reply, hiredis.ReplyError) and _moved(str(reply)) for reply in replies):
        cluster.nodes_manager.initialize()
    return replies


def first_key(command: Command) -> str | bytes | int | float:
    """The first key a command names: ``VERB key …``, or ``EVAL[SHA] script numkeys key …``."""
    verb = command[0]
    verb = verb.decode() if isinstance(verb, bytes) else str(verb)
    if verb.upper() in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"):
        if int(command[2]) < 1:
            raise ValueError(f"{verb} without keys has no slot to route by on a cluster")
        return command[3]
    if len(command) < 2:
        raise ValueError(f"{verb} names no key to route by on a cluster")
    return command[1]


def _moved(message: str) -> bool:
    """True for a redirection (the slot lives on another node now)."""
    return "MOVED " in message or "ASK " in message


def _run(client: Redis, commands: Iterable[Command], *, encoding: str | None) -> list[object]:
    """Pack ``commands`` as they come, send them in chunks on one pooled connection, read every reply."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        pack = hiredis.pack_command
        chunk: list[bytes] = []
        sent = 0
        for command in commands:
            try:
                packed = pack(tuple(command))
            except TypeError:  # a Pieces argument (hiredis packs no tuple): sent as it is, uncopied
                if not any(isinstance(arg, Pieces) for arg in command):
                    raise
                if chunk:
                    connection.send_packed_command([b"".join(chunk)], check_health=False)
                    sent += len(chunk)
                    chunk = []
                connection.send_packed_command(_pack_big(command), check_health=False)
                sent += 1
                continue
            chunk.append(packed)
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


def _pack_big(command: Command) -> list[bytes]:
    """RESP of a command with a :class:`Pieces` argument (a published view, a whole tiles string): its
    pieces, and any other large bytes argument, left as they are — ``hiredis.pack_command`` copies every
    byte (~2 ms per MB), ``sendall`` of the pieces copies nothing. Only a command holding a Pieces comes
    here (the check is hiredis refusing it: no walk over every argument of every command)."""
    out: list[bytes] = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, Pieces):
            out += (b"$%d\r\n" % sum(memoryview(piece).nbytes for piece in arg), *arg, b"\r\n")
            continue
        if isinstance(arg, bytes | memoryview):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        if len(data) > BIG_ARGUMENT:
            out += (b"$%d\r\n" % len(data), data, b"\r\n")
        else:
            out.append(b"$%d\r\n%b\r\n" % (len(data), bytes(data)))
    return out


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

"""Which topics each WebSocket connection should hold — pure, no I/O.

- Trades for every contract of every live epoch (``T.<ticker>``), or the ``T.*`` wildcard when configured.
- Quotes (``Q.<ticker>``) for at most ``quotes_per_connection`` contracts per connection (Massive's cap is
  1,000), nearest the money and nearest expiry first: ranked by ``|K/S − 1| + DTE_WEIGHT × days``.
- The underlying's price: ``T.SPY`` on /stocks, ``V.I:SPX`` on /indices.

Changes are applied as differences (:func:`diff`), chunked into few messages (:func:`messages`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from fabric.contracts import ContractSpec

#: One day to expiry weighs like 0.2 % of moneyness.
DTE_WEIGHT = 0.002
TOPICS_PER_MESSAGE = 2_000


def rank_for_quotes(contracts: Iterable[tuple[str, ContractSpec]], spot: float | None, today: date) -> list[str]:
    """Tickers ordered by ``|K/S − 1| + DTE_WEIGHT × days to expiry`` (ties by ticker, deterministic)."""
    items = list(contracts)
    if not items:
        return []
    if not spot or spot <= 0:
        strikes = sorted(spec.strike for _, spec in items)
        spot = strikes[len(strikes) // 2]
    scored = [
        (abs(spec.strike / spot - 1.0) + DTE_WEIGHT * max((spec.expiry - today).days, 0), ticker)
        for ticker, spec in items
    ]
    scored.sort()
    return [ticker for _, ticker in scored]


def plan_options(
    tickers: Iterable[str],
    ranked_quotes: list[str],
    *,
    quote_connections: int,
    quotes_per_connection: int,
    trades_wildcard: bool,
) -> dict[str, frozenset[str]]:
    """Topics per options connection: ``options-0`` carries the trades, quotes are split in slices."""
    plan: dict[str, set[str]] = {f"options-{k}": set() for k in range(max(1, quote_connections))}
    plan["options-0"] = {"T.*"} if trades_wildcard else {f"T.{t}" for t in tickers}
    for k in range(max(1, quote_connections)):
        part = ranked_quotes[k * quotes_per_connection : (k + 1) * quotes_per_connection]
        plan[f"options-{k}"].update(f"Q.{t}" for t in part)
    return {name: frozenset(topics) for name, topics in plan.items()}


def plan_spot(underlyings: Iterable[str], index_underlyings: Iterable[str]) -> dict[str, frozenset[str]]:
    """Topics of the /stocks and /indices connections (a connection with no topic is not opened)."""
    indices = set(index_underlyings)
    stocks = frozenset(f"T.{u}" for u in underlyings if u not in indices)
    index_topics = frozenset(f"V.I:{u}" for u in underlyings if u in indices)
    return {"stocks": stocks, "indices": index_topics}


def diff(current: frozenset[str] | set[str], desired: frozenset[str] | set[str]) -> tuple[list[str], list[str]]:
    """(topics to subscribe, topics to unsubscribe), each sorted."""
    return sorted(desired - current), sorted(current - desired)


def messages(action: str, topics: list[str], per_message: int = TOPICS_PER_MESSAGE) -> list[dict[str, str]]:
    """``{"action": action, "params": "a,b,…"}`` messages of at most ``per_message`` topics each."""
    return [
        {"action": action, "params": ",".join(topics[i : i + per_message])} for i in range(0, len(topics), per_message)
    ]


def spot_symbols(underlyings: Iterable[str], index_underlyings: Iterable[str]) -> dict[str, str]:
    """Feed symbol → underlying: ``SPY`` → SPY (stock trades), ``I:SPX`` → SPX (index values)."""
    indices = set(index_underlyings)
    return {(f"I:{u}" if u in indices else u): u for u in underlyings}

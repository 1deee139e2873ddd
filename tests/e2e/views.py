"""What an end-to-end watcher checks of the published views (shared by the e2e modules)."""

from __future__ import annotations

import orjson
import redis

from fabric import keys


class ViewLedger:
    """Every view read, each atomically with its underlying's active pointer, and every rule seen broken: a
    view of another epoch than the active one, a version going back, a view disappearing (a gap)."""

    def __init__(self, underlyings: tuple[str, ...], models: tuple[str, ...]) -> None:
        self.pairs = [(model, u) for u in underlyings for model in models]
        self.violations: list[str] = []
        self.versions: dict[tuple[str, str], list[int]] = {}
        self.as_of_ms: dict[tuple[str, str], int] = {}
        self.epochs: dict[str, set[str]] = {u: set() for u in underlyings}

    @property
    def latest(self) -> dict[tuple[str, str], int]:
        """The newest version read of each view (safe to call while the reading thread adds views)."""
        return {pair: history[-1] for pair, history in list(self.versions.items()) if history}

    def read_views(self, r: redis.Redis) -> None:
        """One round over every (model, underlying); raises what Redis raises."""
        for model, u in self.pairs:
            pipe = r.pipeline(transaction=True)
            pipe.get(keys.model_view(model, u))
            pipe.get(keys.active_epoch(u))
            raw, active = pipe.execute()
            history = self.versions.setdefault((model, u), [])
            if raw is None:
                if history:
                    self.violations.append(f"{model} {u}: the view disappeared (a gap)")
                continue
            view = orjson.loads(raw)
            if view["epoch"] != active:
                self.violations.append(f"{model} {u}: view of epoch {view['epoch']}, active {active}")
            if history and view["version"] < history[-1]:
                self.violations.append(f"{model} {u}: version went back {history[-1]} → {view['version']}")
            history.append(view["version"])
            self.as_of_ms[(model, u)] = view["as_of_ms"]
            self.epochs[u].add(view["epoch"])

"""``python -m bench [NAME …]``: run the benchmarks (all by default), save and print the results."""

from __future__ import annotations

import argparse
import importlib
import logging

from bench.results import Result, save

BENCHES = {
    "chain_decompose": "bench.chain_decompose",
    "models_recompute": "bench.models_recompute",
    "ingest_throughput": "bench.ingest_throughput",
    "sse_fanout": "bench.sse_fanout",
    "scale": "bench.scale",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in args.names or list(BENCHES):
        module = importlib.import_module(BENCHES[name])
        results: list[Result] = module.run()
        for result in results:
            print(
                f"{result.name}: {result.value} {result.unit} | baseline {result.baseline} {result.unit} | "
                f"ratio {result.ratio}x | target {result.target}" + (f" | {result.detail}" if result.detail else "")
            )
        save(results)  # after each benchmark: one that fails does not lose the others' results
        print(f"{name}: wrote bench/results.json and the table in docs/benchmarks.md", flush=True)


if __name__ == "__main__":
    main()

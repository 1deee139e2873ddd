"""Record and replay: the file format (:mod:`recording.format`), the writer ingest and the chain worker record
with (:mod:`recording.writer`), and the readers the simulator's replay uses (in the format module).

One package, so that the simulator — which imports nothing else of mmaker — and the processes that record
share exactly one definition of a recording without importing each other.
"""

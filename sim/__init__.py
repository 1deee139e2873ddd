"""A self-contained Massive-protocol market simulator (REST chain snapshots + WebSocket streams).

An independent peer that speaks only the Massive protocol (``docs/reference/massive.md``): it shares no
code with the client side but the recording file format (``recording/format.py``), which the replay reads.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

"""A self-contained Massive-protocol market simulator (REST chain snapshots + WebSocket streams).

The package imports nothing from the rest of the project: it is an independent peer that speaks
only the Massive protocol (see ``/work/shared/MASSIVE_API.md``).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

"""Pure models: Black-Scholes greeks (``bs``), dealer gamma exposure (``gex``) and flow heatmap tiles (``heatmap``).

Plain values and numpy arrays in, JSON-ready dicts out; no Redis, no Celery, no clock (``now_ms`` is passed in).
"""

"""web — published model views served to dashboards: SSE streams, a JSON API, health and a static dashboard.

``python -m web`` runs it on uvicorn. Rooms: :mod:`web.events` (the pure SSE encoder), :mod:`web.hub`
(one pub/sub subscription fanned out to every client), :mod:`web.health` (``/healthz``), :mod:`web.app`
(routes, auth, CORS) and ``web/static`` (the dashboard, no build step).
"""

#!/usr/bin/env bash
# make run: check Redis (start one under ./var when nothing listens and redis-server exists), then start
# every process of the Procfile under mmaker's supervisor (python -m mmaker.supervise): a process that exits
# is restarted with back-off; Ctrl-C stops them all, the Redis it started last.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var/redis

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
processes=(ingest chain heatmap gex beat web flower)
if [ -z "${MASSIVE_API_KEY:-}" ]; then
  processes=(sim "${processes[@]}")
  echo "MASSIVE_API_KEY is not set: running on the built-in market simulator."
else
  echo "MASSIVE_API_KEY is set: talking to Massive."
fi

if ! "$PY" - <<'PY' 2>/dev/null
import os
from fabric.redis_client import redis_from_url  # redis+cluster:// → the cluster client
redis_from_url(os.environ["REDIS_URL"], socket_connect_timeout=1).ping()
PY
then
  if [[ "$REDIS_URL" == *+cluster://* ]]; then
    echo "Nothing answers at the Redis Cluster of REDIS_URL; start the cluster first (make run starts none)." >&2
    exit 1
  fi
  read -r host port < <("$PY" -c 'import os; from urllib.parse import urlsplit; u = urlsplit(os.environ["REDIS_URL"]); print(u.hostname or "127.0.0.1", u.port or 6379)')
  if [[ "$host" != "127.0.0.1" && "$host" != "localhost" ]]; then
    echo "Nothing answers at REDIS_URL (host $host); start Redis there or point REDIS_URL at a running server." >&2
    exit 1
  fi
  if ! command -v redis-server >/dev/null; then
    echo "Nothing answers at REDIS_URL and redis-server is not installed: install Redis (Debian: apt-get install redis-server) or set REDIS_URL." >&2
    exit 1
  fi
  echo "No Redis at 127.0.0.1:$port: starting one with AOF persistence under ./var/redis."
  export MMAKER_LOCAL_REDIS_PORT="$port"
  processes=(redis "${processes[@]}")
fi

[ -z "${MASSIVE_API_KEY:-}" ] && echo "Simulator REST/WS: http://${MMAKER_SIM_HOST:-127.0.0.1}:${MMAKER_SIM_PORT:-8765}  (status: /admin/status)"
echo "Dashboard:         http://${MMAKER_WEB_HOST:-127.0.0.1}:${MMAKER_WEB_PORT:-8000}/   (health: /healthz)"
echo "Flower:            http://${MMAKER_FLOWER_ADDRESS:-127.0.0.1}:${MMAKER_FLOWER_PORT:-5555}$([ -n "${FLOWER_BASIC_AUTH:-}" ] && echo "   (basic auth on)")"
echo "State store:       $("$PY" -c 'import os; from fabric.settings import mask_url; print(mask_url(os.environ["REDIS_URL"]))')"
exec "$PY" -m mmaker.supervise -f Procfile --ready-url "http://${MMAKER_WEB_HOST:-127.0.0.1}:${MMAKER_WEB_PORT:-8000}/healthz" "${processes[@]}"

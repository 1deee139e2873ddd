#!/usr/bin/env bash
# make reset: delete the state `make run` keeps under ./var — the local Redis's append-only file, beat's
# schedule, recordings written there — but only when no process still uses it: a process working in var/
# (the Redis `make run` started runs there), holding a file of it open (beat's schedule, a recording), or
# `make run`'s supervisor itself. A Redis that `make run` did not start (REDIS_URL elsewhere) is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)
var="$root/var"

if [ ! -e "$var" ]; then
  echo "Nothing to reset: there is no var/."
  exit 0
fi

busy=()
for proc in /proc/[0-9]*; do
  pid=${proc#/proc/}
  [ "$pid" = "$$" ] && continue  # this script (it may have inherited a descriptor)
  cwd=$(readlink "$proc/cwd" 2>/dev/null) || continue  # gone, or another user's process
  why=""
  case "$cwd/" in "$var"/*) why="works in ${cwd#"$root"/}" ;; esac
  if [ -z "$why" ]; then
    for fd in "$proc"/fd/*; do
      target=$(readlink "$fd" 2>/dev/null) || continue
      case "$target" in "$var"/*) why="has ${target#"$root"/} open"; break ;; esac
    done
  fi
  command=$(tr '\0' ' ' < "$proc/cmdline" 2>/dev/null | cut -c1-100) || command=""
  if [ -z "$why" ] && [ "$cwd" = "$root" ] && [[ "$command" == *mmaker.supervise* || "$command" == *"mmaker run"* ]]; then
    why="is make run's supervisor"
  fi
  [ -n "$why" ] && busy+=("  pid $pid ($command) $why")
done

if [ "${#busy[@]}" -gt 0 ]; then
  echo "Not resetting: var/ is still in use — stop make run (Ctrl-C) first." >&2
  printf '%s\n' "${busy[@]}" >&2
  exit 1
fi

describe() {
  case "$1" in
    var/redis) echo "the local Redis's data (append-only file)" ;;
    var/celerybeat-schedule*) echo "beat's schedule" ;;
    var/rec*) echo "a recording (MMAKER_RECORD_DIR)" ;;
    *) echo "left under var/" ;;
  esac
}

echo "Deleting the state make run kept under var/:"
shopt -s nullglob dotglob
for entry in var/*; do
  printf '  %-28s %6s  %s\n' "$entry" "$(du -sh "$entry" | cut -f1)" "$(describe "$entry")"
done
rm -rf var
echo "Done. The next make run starts its local Redis empty and beat with a new schedule"
echo "(a Redis that make run did not start keeps its data: flush it yourself if you mean to)."

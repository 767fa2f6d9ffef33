#!/usr/bin/env bash
# System packages feedpipe needs on Debian/Ubuntu, installed only when missing:
#   bash scripts/bootstrap.sh run    make, python3-venv, redis-server, Java 17 (Kafka), Maven
#                                    (fetches the Kafka jars)
#   bash scripts/bootstrap.sh test   the same plus Chromium (the ops page's browser test)
# Nothing missing: no apt-get at all. As root: `apt-get update` once, then one install. Not root:
# exits 1 with the install command to run. Called by `make run`, `make test` and .ci/run.
set -euo pipefail

profile="${1:-test}"
case "$profile" in run | test) ;; *) echo "usage: $0 [run|test]" >&2; exit 64 ;; esac

have() { command -v "$1" >/dev/null 2>&1; }

need=()
have make || need+=(make)
have python3 || need+=(python3)
if have python3 && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  need+=(python3-venv)
fi
have redis-server || test -x /usr/bin/redis-server || need+=(redis-server)
have java || test -n "${JAVA_HOME:-}" || need+=(openjdk-17-jre-headless)
have mvn || need+=(maven)
if [ "$profile" = test ]; then
  have chromium || have chromium-browser || need+=(chromium)
fi

if ((${#need[@]})); then
  install=(apt-get install -y --no-install-recommends "${need[@]}")
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]}" >&2
    echo "install them with: sudo apt-get update && sudo ${install[*]}" >&2
    exit 1
  fi
  echo "installing system packages: ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${install[@]}"
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"python3 is {sys.version.split()[0]}; feedpipe needs 3.11+")
PY

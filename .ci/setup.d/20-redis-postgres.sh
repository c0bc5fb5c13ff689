#!/usr/bin/env bash
# Redis and PostgreSQL binaries for attn_assets_tests/distributed (the celery profile test starts its
# own servers on free 127.0.0.1 ports with temp data dirs; nothing is started here). Idempotent, quiet.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  echo "redis-server and postgresql already installed"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
$SUDO apt-get clean  # the downloaded .deb files are not needed once installed
echo "installed: ${need[*]}"

#!/usr/bin/env bash
# Free disk, said first: a fresh run needs about 12 GB (core venv 2.4 GB, the PLONK venv's CUDA torch 6.5 GB,
# pytest's temp folders up to 3 GB). A "No space left on device" later in the log is then explained here.
set -euo pipefail

need_kb=$((12 * 1024 * 1024))
for venv in .venv:2500000 .venv-plonk:6600000; do
  [ -e "${venv%%:*}/.installed" ] && need_kb=$((need_kb - ${venv##*:}))
done
for dir in . "${TMPDIR:-/tmp}"; do
  free_kb=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
  echo "disk: $((free_kb / 1024 / 1024)) GB free under $(cd "$dir" && pwd)"
  if [ "$free_kb" -lt "$need_kb" ]; then
    echo "00-disk.sh: WARNING: under $((need_kb / 1024 / 1024)) GB free under $dir; the venv installs or the" \
         "tests may fail with 'No space left on device'. Free space there (old clones, venvs, /tmp) and re-run." >&2
  fi
done

#!/usr/bin/env bash
# GPU check (issue: the data path at GPU scale): run from the repository root on a machine with torch,
# torchvision and transformers; no network, nothing installed. Prints a markdown table; under 5 minutes.
#   bash benchmarks/gpu_check.sh              # full check on the GPU
#   bash benchmarks/gpu_check.sh --cpu-smoke  # tiny shapes on the CPU, seconds
# Extra arguments go to benchmarks/gpu_check.py (--time-cap SECONDS, --json FILE).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
json_args=()
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then json_args=(--json "$OUT/gpu_check.json"); fi
timeout --kill-after=10 290 "$PYTHON" benchmarks/gpu_check.py "${json_args[@]}" "$@"
status=$?
[ "$status" -eq 124 ] && echo "gpu_check: stopped at the 290 s limit (the rows above were measured)" >&2
exit "$status"

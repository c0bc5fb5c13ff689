#!/usr/bin/env bash
# Headless Chromium for the browser test (attn_assets_tests/ui/test_browser.py): Debian's
# chromium and chromium-driver. Playwright drives /usr/bin/chromium; it never downloads a browser.
# Idempotent: does nothing when both are installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "chromium: $(chromium --version 2>/dev/null | head -n1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "10-chromium.sh: not root and no sudo; install chromium and chromium-driver by hand" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
$SUDO apt-get clean  # the downloaded .deb files are not needed once installed
echo "chromium: $(chromium --version 2>/dev/null | head -n1)"

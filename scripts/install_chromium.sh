#!/usr/bin/env bash
# The dashboard's browser test drives a real Chromium through Playwright. Playwright's own browser
# download needs its CDN; Debian's chromium package needs only the package mirror, so on a Debian or
# Ubuntu machine without one it is installed here (as root, or through sudo when that needs no
# password). Elsewhere (macOS, no apt) nothing is done and the browser test says why it skips.
set -euo pipefail
for browser in /usr/bin/chromium /usr/bin/chromium-browser; do
  [ -x "$browser" ] && exit 0
done
exec "$(dirname "$0")/apt_install.sh" chromium "the dashboard test"

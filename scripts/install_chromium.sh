#!/usr/bin/env bash
# The dashboard's browser test drives a real Chromium through Playwright. Playwright's own browser
# download needs its CDN; Debian's chromium package needs only the package mirror, so on a Debian or
# Ubuntu machine without one it is installed here (as root, or through sudo when that needs no
# password). Elsewhere (macOS, no apt) nothing is done and the browser test says why it skips.
set -euo pipefail
for browser in /usr/bin/chromium /usr/bin/chromium-browser; do
  [ -x "$browser" ] && exit 0
done
command -v apt-get >/dev/null 2>&1 || exit 0
as_root=()
if [ "$(id -u)" != 0 ]; then
  sudo -n true 2>/dev/null || { echo "chromium is not installed and sudo asks for a password: the dashboard test will skip" >&2; exit 0; }
  as_root=(sudo -n)
fi
echo "installing Debian's chromium for the dashboard test" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
  || { "${as_root[@]}" apt-get update -q >/dev/null && "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null; }

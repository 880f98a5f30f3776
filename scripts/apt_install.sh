#!/usr/bin/env bash
# `scripts/apt_install.sh PACKAGE PURPOSE`: install a Debian package some tests need, when this is a
# Debian or Ubuntu machine and we are root or sudo needs no password; otherwise say which tests will
# skip and succeed anyway (those tests say why they skip). Used by install_chromium.sh and
# install_postgres.sh, which first check whether the program is there already.
set -euo pipefail
package=$1 purpose=$2
command -v apt-get >/dev/null 2>&1 || exit 0
as_root=()
if [ "$(id -u)" != 0 ]; then
  sudo -n true 2>/dev/null || { echo "$package is not installed and sudo asks for a password: $purpose will skip" >&2; exit 0; }
  as_root=(sudo -n)
fi
echo "installing Debian's $package for $purpose" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y -q --no-install-recommends "$package" >/dev/null 2>&1 \
  || { "${as_root[@]}" apt-get update -q >/dev/null && "${as_root[@]}" apt-get install -y -q --no-install-recommends "$package" >/dev/null; }

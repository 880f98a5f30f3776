#!/usr/bin/env bash
# The PostgreSQL queue's tests start a throw-away server of their own from Debian's `postgresql`
# package (its programs live in /usr/lib/postgresql/<major>/bin; the package starts no server where
# nothing runs services, and the tests never use one it does start). On a Debian or Ubuntu machine
# without it, it is installed here (as root, or through sudo when that needs no password).
# Elsewhere (macOS: `brew install postgresql@16` puts initdb on PATH) nothing is done, and without a
# server the PostgreSQL tests say why they skip.
set -euo pipefail
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && exit 0
command -v initdb >/dev/null 2>&1 && exit 0
command -v apt-get >/dev/null 2>&1 || exit 0
as_root=()
if [ "$(id -u)" != 0 ]; then
  sudo -n true 2>/dev/null || { echo "postgresql is not installed and sudo asks for a password: the PostgreSQL tests will skip" >&2; exit 0; }
  as_root=(sudo -n)
fi
echo "installing Debian's postgresql for the PostgreSQL queue tests" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 \
  || { "${as_root[@]}" apt-get update -q >/dev/null && "${as_root[@]}" apt-get install -y -q --no-install-recommends postgresql >/dev/null; }

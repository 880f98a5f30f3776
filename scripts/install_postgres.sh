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
exec "$(dirname "$0")/apt_install.sh" postgresql "the PostgreSQL tests"

#!/usr/bin/env bash
# Creates .venv/ at the project root and installs ttsd into it (editable). Idempotent: when nothing
# that shapes the environment changed since the last run, it returns in about a second.
#   scripts/install.sh          the daemon and CLI
#   scripts/install.sh --dev    plus the test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python_bin="$candidate"; break
    fi
  done
fi
[ -n "$python_bin" ] || { echo "ttsd needs Python 3.11 or newer (set PYTHON=/path/to/python3)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

# On Linux without an NVIDIA driver, an unconstrained resolve pulls torch with gigabytes of CUDA
# packages; the constraint keeps the CPU build (where a local +cpu wheel exists, pip prefers it).
constraints=()
if [ "$(uname -s)" = "Linux" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  constraints=(-c scripts/constraints-linux.txt)
fi

stamp=.venv/.ttsd-install
fingerprint=$(cat pyproject.toml scripts/install.sh scripts/apt_install.sh scripts/install_chromium.sh scripts/install_postgres.sh scripts/constraints-linux.txt scripts/fix_torchaudio.py \
              | sha256sum | cut -c1-16)"$extras${constraints[*]:-}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi

"${pip[@]}" install "${constraints[@]}" -e ".$extras"
# qwen-tts's metadata pulls gradio for its web demo; its real needs are in our pyproject.
"${pip[@]}" install "${constraints[@]}" --no-deps "qwen-tts==0.1.1"
.venv/bin/python scripts/fix_torchaudio.py
if [ -n "$extras" ]; then scripts/install_chromium.sh; scripts/install_postgres.sh; fi
echo "$fingerprint" > "$stamp"
echo "ttsd installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

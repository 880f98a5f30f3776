"""Make `import torchaudio` work next to a CPU-only torch.

PyPI's Linux torchaudio wheels are CUDA builds: their native libraries need libc10_cuda.so, so
`import torchaudio` (and with it `import qwen_tts`) dies with OSError beside CPU torch. qwen-tts only
uses torchaudio's pure-Python `compliance.kaldi`, and torchaudio imports fine when its native
libraries are absent (it treats that as an extension-less install). So when, and only when, the
import fails for that reason, the libraries are renamed to `*.so.disabled`. Idempotent.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


def torchaudio_import_error() -> str | None:
    """The error text of a fresh `import torchaudio`, or None when it imports."""
    probe = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True, check=False)
    return None if probe.returncode == 0 else probe.stderr.strip().splitlines()[-1]


def main() -> int:
    """Disable torchaudio's native libraries if they cannot load; report what was done."""
    error = torchaudio_import_error()
    if error is None:
        return 0
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None or "OSError" not in error:
        print(f"torchaudio does not import: {error}", file=sys.stderr)
        return 1
    lib_dir = Path(spec.origin).parent / "lib"
    for library in lib_dir.glob("*.so"):
        library.rename(library.with_name(library.name + ".disabled"))
    error = torchaudio_import_error()
    if error is not None:
        print(f"torchaudio still does not import: {error}", file=sys.stderr)
        return 1
    print(f"torchaudio: disabled native libraries in {lib_dir} (CUDA build beside CPU torch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

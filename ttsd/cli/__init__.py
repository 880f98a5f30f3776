"""The `ttsd` command line: a thin click layer over the core. `main` (in ttsd.cli.app) is the
group; each module below registers its commands on it when imported here."""

from ttsd.cli import cache, doctor, jobs, launchd, run, status, steer, submit, voices  # noqa: F401  (they register)
from ttsd.cli.app import main

__all__ = ["main"]

"""The `ttsd` command line: a thin click layer over the core. `main` (in ttsd.cli.main) is the
group; each module below registers its commands on it when imported here."""

from ttsd.cli import cache, jobs, launchd, models, run, status, steer, submit  # noqa: F401  (they register)
from ttsd.cli.main import main

__all__ = ["main"]

"""`python -m ttsd` is the `ttsd` command."""

from ttsd.cli import main

main()

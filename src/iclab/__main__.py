"""``python -m iclab``: the command line."""

from iclab.cli import main

main()

"""`python -m univrs` runs the command line."""

from univrs.cli import main

main()

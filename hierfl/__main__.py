"""``python -m hierfl`` runs the command line."""

from hierfl.cli import main

main()

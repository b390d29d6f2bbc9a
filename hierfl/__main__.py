"""``python -m hierfl`` runs the command line."""

from hierfl.launch import main

main()

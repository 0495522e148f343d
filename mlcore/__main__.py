"""``python -m mlcore`` runs the command line."""

from .cli import main

main()

"""``python -m instrumetry``: the same CLI, for when the script is not on PATH."""

from instrumetry.cli.main import main

main()

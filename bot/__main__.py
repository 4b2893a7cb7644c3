"""`python -m bot`: the `yarigai` command, for when its script is not on PATH."""

from bot.cli.main import main

main()

"""`python -m bot.cli`: the `yarigai` command."""

from bot.cli.main import main

main()

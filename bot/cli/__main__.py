"""`python -m bot.cli`: the `yarigai` command."""

import sys

from bot.cli.parent import die_with_parent, parent_in

parent = parent_in(sys.argv)
if parent is not None:  # a worker of `yarigai serve`: before any import of the app
    die_with_parent(parent)

from bot.cli.main import main  # noqa: E402

main()

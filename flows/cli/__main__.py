"""``python -m flows.cli``: the ``roadcast`` command line."""

from flows.cli import main

main()

"""``python -m icetime.cli``: the ``icetime`` command."""
from icetime.cli.arguments import main

main()

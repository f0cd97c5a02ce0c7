"""The ``icetime`` command: run a venue, run the demo, replay a race script.

By what each part does:

- :mod:`icetime.cli.arguments`: the command line, and each failure's exit code
  (:func:`main`, the ``icetime`` entry point);
- :mod:`icetime.cli.supervisor`: Redis and the services kept running
  (:class:`Supervisor`);
- :mod:`icetime.cli.venue`: ``icetime run`` and ``icetime relay``, the start lists;
- :mod:`icetime.cli.demo`: ``icetime demo``;
- :mod:`icetime.cli.replaying`: sending a race script through the feed (:func:`replay`,
  :class:`Tally`) and ``icetime replay``;
- :mod:`icetime.cli.console`: where each listener and screen is, as printed.

Nothing here imports asyncio, Redis or HTTP: ``icetime --help`` or a refused argument or
configuration answers at once.
"""
from icetime.cli.arguments import main
from icetime.cli.replaying import Tally, replay
from icetime.cli.supervisor import Supervisor

__all__ = ["Supervisor", "Tally", "main", "replay"]

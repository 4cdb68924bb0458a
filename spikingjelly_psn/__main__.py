"""``python -m spikingjelly_psn``: the ``spikingjelly-psn`` command."""

from spikingjelly_psn.cli import main

raise SystemExit(main())

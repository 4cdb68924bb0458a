"""``python -m spikingjelly_psn.train``."""

from spikingjelly_psn.train.cli import main

raise SystemExit(main())

"""``python -m spikingjelly_psn.bench``."""

from .cli import main

raise SystemExit(main())

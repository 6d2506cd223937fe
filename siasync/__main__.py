"""Allow ``python -m siasync``."""

from siasync.cli import main

raise SystemExit(main())

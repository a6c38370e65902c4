"""``python -m tl_continuous`` runs the console script."""

from tl_continuous.cli import main

raise SystemExit(main())

"""``python -m memmon`` runs the same command line as the ``memmon`` script."""

from memmon.cli import main

raise SystemExit(main())

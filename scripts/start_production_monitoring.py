#!/usr/bin/env python3
"""The guide's entry point: ``python scripts/start_production_monitoring.py --config ... --health-port 8080``.

Runs the same agent as the ``memmon`` command (every flag of ``memmon --help`` works), from an installed memmon
or straight from a checkout.
"""

import sys
from pathlib import Path

try:
    from memmon.cli import main
except ModuleNotFoundError:  # running from a checkout without `pip install`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
    from memmon.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

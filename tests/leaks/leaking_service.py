"""A service leaking about 5 MB/s with memmon inside (library mode, tracemalloc on), alerting a webhook.

    python tests/leaks/leaking_service.py KIND STATE_DIR WEBHOOK_URL STOP_FILE MAX_SECONDS

Keeps 500 kB every 0.1 s until STOP_FILE exists or MAX_SECONDS have passed. KIND ``python``: the 500 kB are a
``bytearray`` allocated at line 5 of ``leaky.py`` (written to STATE_DIR); ``native``: an anonymous ``mmap``
written through (memory outside Python's allocators: tracemalloc sees only the small mmap object), with a 4 s
tracemalloc window; ``native-stops``: the same, stopping as soon as the leak alert has fired. Leak detection
has a 10 s ``monitoring_window``; the tracemalloc window is the default (60 s) unless said otherwise, checks
come every second. Prints one JSON line per alert transition its custom handler sees (``"event":
"transition"``), then one line with the firing alerts and the ``/health/leaks`` report (``"event": "end"``);
exits 0.
"""

from __future__ import annotations

import asyncio
import json
import mmap
import sys
import time
from pathlib import Path

from memmon import ProductionMemoryMonitor
from memmon.alerting.payload import alert_payload
from memmon.config import load_settings
from memmon.model import Alert

LEAKY_SOURCE = """\
held = []


def leak_a_little():
    held.append(bytearray(500_000))
"""
LEAKY_LINE = 5
CHUNK = 500_000
NATIVE_TRACE_WINDOW = 4


def told_to_stop(stop_file: Path) -> bool:
    """Whether the test has asked the service to stop (a stat of a local file: microseconds)."""
    return stop_file.exists()


async def main(kind: str, state_dir: str, webhook_url: str, stop_file: Path, max_seconds: float) -> None:
    import leaky  # type: ignore[import-not-found]

    leak_detection: dict[str, object] = {"enabled": True, "monitoring_window": 10}
    if kind != "python":
        leak_detection["tracemalloc_window_seconds"] = NATIVE_TRACE_WINDOW if kind == "native" else 60

    settings = load_settings(
        None,
        overrides={
            "monitoring": {
                "check_interval": 1,
                "prometheus_port": 0,
                "enable_tracemalloc": True,
                "leak_detection": leak_detection,
            },
            "alerting": {"webhook_url": webhook_url},
            "storage": {"state_dir": state_dir},
            "auto_response": {"enabled": False},
        },
        environ={},
    )
    monitor = ProductionMemoryMonitor(settings=settings)

    fired: list[Alert] = []

    def report(alert: Alert) -> None:
        if alert.component == "memory_leak" and alert.state == "firing":
            fired.append(alert)
        print(json.dumps({"event": "transition", "seen_at": time.time(), **alert_payload(alert)}), flush=True)

    monitor.alert_manager.add_handler(report)
    await monitor.start_monitoring()
    loop = asyncio.get_running_loop()
    started = loop.time()
    native: list[mmap.mmap] = []
    while loop.time() - started < max_seconds and not told_to_stop(stop_file):
        if kind == "python":
            leaky.leak_a_little()
        elif kind == "native" or not fired:
            native.append(mmap.mmap(-1, CHUNK))
            native[-1].write(b"\1" * CHUNK)
        await asyncio.sleep(0.1)
    active = [alert_payload(alert) for alert in monitor.active_alerts()]
    leaks = monitor.leaks()
    await monitor.stop_monitoring()
    print(json.dumps({"event": "end", "active": active, "leaks": leaks}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[2])
    Path(sys.argv[2], "leaky.py").write_text(LEAKY_SOURCE)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), float(sys.argv[5])))

"""A service with a memory pattern, run in its own process with memmon inside (library mode).

    python tests/leaks/workload.py KIND STATE_DIR SECONDS

KIND is ``leak`` (about 4 MB/s kept forever, allocated at a known line of ``leaky.py``), ``sawtooth``
(16 MB up in 2 s, then collected), ``cache`` (fills 20 MB in 2 s, then flat), ``spike`` (60 MB for half a
second). Prints one JSON line per firing memory_leak alert and memory_leak_site follow-up (the allocation site
found), and ``done`` at the end; exits 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from memmon import ProductionMemoryMonitor
from memmon.config import load_settings
from memmon.model import Alert

LEAKY_SOURCE = """\
held = []


def leak_a_little():
    held.append(bytearray(400_000))
"""
LEAKY_LINE = 5


async def main(kind: str, state_dir: str, seconds: float) -> None:
    import leaky  # type: ignore[import-not-found]

    settings = load_settings(
        None,
        overrides={
            "monitoring": {
                "check_interval": 0.25,
                "prometheus_port": 0,
                "enable_tracemalloc": True,
                "leak_detection": {
                    "enabled": True,
                    "monitoring_window": 6,
                    "threshold_growth_rate": 0.1,
                    "min_growth_mb": 8,
                    "confirm_checks": 2,
                    "tracemalloc_window_seconds": 2,
                },
            },
            "storage": {"state_dir": state_dir},
            "auto_response": {"enabled": False},
        },
        environ={},
    )
    monitor = ProductionMemoryMonitor(settings=settings)

    def report(alert: Alert) -> None:
        if alert.component in ("memory_leak", "memory_leak_site") and alert.state == "firing":
            body = {"component": alert.component, "message": alert.message, "metadata": dict(alert.metadata)}
            print(json.dumps(body), flush=True)

    monitor.alert_manager.add_handler(report)
    await monitor.start_monitoring()
    loop = asyncio.get_running_loop()
    started = loop.time()
    cache: dict[int, bytes] = {}
    garbage: list[bytes] = []
    tick = 0
    while loop.time() - started < seconds:
        tick += 1
        if kind == "leak":
            leaky.leak_a_little()
        elif kind == "sawtooth":
            garbage += [bytes(400_000), bytes(400_000)]
            if len(garbage) >= 40:  # 16 MB in 2 s, then collected: three teeth per window
                garbage.clear()
        elif kind == "cache" and len(cache) < 50:  # 20 MB in the first 2 s (a cache warming up), then flat
            for extra in range(2):
                cache[tick * 2 + extra] = bytes(400_000)
        elif kind == "spike" and tick == 20:
            burst = [bytes(1_000_000) for _ in range(60)]
            await asyncio.sleep(0.5)
            del burst
        await asyncio.sleep(0.1)
    await monitor.stop_monitoring()
    print(f"done {monitor.telemetry.leaks_detected.total():.0f}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[2])
    Path(sys.argv[2], "leaky.py").write_text(LEAKY_SOURCE)
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))

"""memmon: a memory watchdog for production services.

Library use, as the guide shows::

    from memmon import ProductionMemoryMonitor, MemoryHealthServer

    monitor = ProductionMemoryMonitor("monitoring/monitoring_config.json")
    await monitor.start_monitoring()
    server = MemoryHealthServer(monitor, port=8080)
    await server.start_server()
    ...
    await server.stop_server()
    await monitor.stop_monitoring()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["MemoryHealthServer", "ProductionMemoryMonitor", "__version__"]

if TYPE_CHECKING:
    from memmon.app import ProductionMemoryMonitor
    from memmon.exposition.server import MemoryHealthServer


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import memmon.model` (or the CLI's check-config) stays light.
    if name == "ProductionMemoryMonitor":
        from memmon.app import ProductionMemoryMonitor

        return ProductionMemoryMonitor
    if name == "MemoryHealthServer":
        from memmon.exposition.server import MemoryHealthServer

        return MemoryHealthServer
    raise AttributeError(f"module 'memmon' has no attribute {name!r}")

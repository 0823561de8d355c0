"""Storage: the SQLite history and alert log, the in-memory history ring, and the one-agent-per-state-dir lock.

A shared layer below the pipeline's stages (the alert spool uses ``sqlitefile`` and ``alertrows``): it imports
``memmon.model``, ``memmon.telemetry``, ``memmon.kits`` and itself, never a stage.
"""

"""The configuration: one pydantic-settings tree, validated once at start-up.

A layer below every stage: it imports ``memmon.model`` and its own modules, nothing else of memmon. The modules:
``settings`` (the root and how it is loaded: overrides > environment > config file > defaults), ``sources`` (the
environment and file layers), ``problems`` (validation errors as lines, secrets redacted), ``fields`` (the
``Section`` base and shared field types), the sections (``sections``: sampling, thresholds, the target;
``alerting``; ``actions``; ``node``; ``runtime``: server, storage, logging), ``targets`` (the ``targets`` entries),
``restart`` (a pre-fork server's preset and the restart rules), ``file`` (the JSON file with comments), ``rules``
(problem lines and cross-field rules).

How stages receive settings, one rule: the assembly (``memmon.assembly``) hands each part of the sample,
evaluate, alert and act stages the section it reads (``AlertingSettings``, ``AutoResponseSettings``,
``GracefulRestartSettings``...) or plain values, never the whole ``Settings`` (``tests/test_architecture.py``
checks it); the wiring and the exposition (which shows the effective configuration) read the root.
"""

from memmon.config.file import ConfigError
from memmon.config.settings import GUIDE_ENV, Settings, check_config_file, load_settings

__all__ = ["GUIDE_ENV", "ConfigError", "Settings", "check_config_file", "load_settings"]

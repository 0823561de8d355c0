"""Small shared kits that know nothing of memory: timestamps, ``Retry-After``, sd_notify, the fixed-rate loop,
logging set-up, the one HTTP client (with its redirect and redaction rules) and the Kubernetes API client on top
of it. Every layer may import them; they import only the standard library, their libraries and each other.
"""

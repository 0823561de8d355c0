"""Small shared kits that know nothing of memory: timestamps, ``Retry-After``, sd_notify, the fixed-rate loop,
logging set-up. Every layer may import them; they import only the standard library, their libraries and each
other.
"""

"""The leaking container's process of the node-mode kernel test (run in its container scope by
``systemd-run --scope``).

``grower.py GO_FILE``: idle (a few MB) until GO_FILE appears, then it takes as many MiB as the file says, all at once,
and holds them (idle again) until it is killed: a step over a threshold, not an endless leak, so an eviction that
only an API server would act on leaves it running below its container's limit. SIGTERM ends it (the default
action), as a container's main process that does not handle it.
"""

import os
import sys
import time

MIB = 1024 * 1024


def main() -> None:
    go = sys.argv[1]
    while not os.path.exists(go):
        time.sleep(0.1)
    with open(go) as file:
        target_mib = int(file.read().strip())
    # b"x" * n writes every byte, so each page is really touched (bytearray(n) could stay on the zero page).
    kept = [b"x" * MIB for _ in range(target_mib)]
    print(f"holding {len(kept)} MiB", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()

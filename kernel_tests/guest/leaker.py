"""The leaking service of the kernel tests (installed in the guest as /usr/local/bin/kt-leaker, run by leak.service
and by the instances of leak@.service).

``kt-leaker [RUN_DIR]`` (default /run/leak): idle (a few MB) until the file RUN_DIR/go appears; then it keeps 1 MiB
more every 1/RATE s, where RATE (MB/s) is the file's content, 0 meaning as fast as it can. RUN_DIR is the unit's
RuntimeDirectory= (/run/leak-%i for leak@%i.service, so instances run side by side), emptied at every (re)start, so
a restarted instance is idle again. SIGTERM ends it at once (the default action), a clean stop for systemd.
"""

import os
import sys
import time

MIB = 1024 * 1024


def main() -> None:
    go = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "/run/leak", "go")
    while not os.path.exists(go):
        time.sleep(0.1)
    with open(go) as file:
        rate_mb = float(file.read().strip() or 0)
    os.unlink(go)
    print(f"leaking at {rate_mb or 'full speed'} MB/s", flush=True)
    kept: list[bytes] = []
    started = time.monotonic()
    while True:
        # b"x" * n writes every byte, so each page is really touched (bytearray(n) could stay on the zero page).
        kept.append(b"x" * MIB)
        if len(kept) % 32 == 0:  # the rate actually reached, in the unit's journal
            elapsed = time.monotonic() - started
            print(
                f"kept {len(kept)} MiB after {elapsed:.2f} s: {len(kept) * MIB / 1e6 / elapsed:.1f} MB/s",
                flush=True,
            )
        if rate_mb > 0:
            due = started + len(kept) * MIB / (rate_mb * 1e6)
            time.sleep(max(0.0, due - time.monotonic()))


if __name__ == "__main__":
    main()

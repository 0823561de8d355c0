#!/usr/bin/env python3
"""Print this host's own Debian sources for one suite as one-line "deb URI SUITE main" entries, for mmdebstrap.

    scripts/debian_sources.py [SUITE]     (default bookworm; SUITE-updates and SUITE-security are kept too)

Reads /etc/apt/sources.list, /etc/apt/sources.list.d/*.list (one-line format) and *.sources (deb822; stanzas with
`Enabled: no` skipped), so the images the tiers build (the kernel VM, the container base) use the mirror this
machine's apt already uses instead of a hard-coded one. Prints nothing when there is none.
"""

from __future__ import annotations

import glob
import re
import sys
from pathlib import Path


def main() -> None:
    """Print the deb lines of the suite (argv[1], default bookworm), first occurrence first."""
    suite_name = sys.argv[1] if len(sys.argv) > 1 else "bookworm"
    entries: list[tuple[str, str]] = []

    def add(kind: str, uri: str, suite: str) -> None:
        if kind == "deb" and suite.split("-")[0] == suite_name and (uri, suite) not in entries:
            entries.append((uri, suite))

    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
            if len(words) >= 3:
                add(words[0], words[1], words[2])
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", Path(path).read_text()):
            fields: dict[str, list[str]] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    name, _, value = line.partition(":")
                    fields[name.strip().lower()] = value.split()
            if fields.get("enabled", ["yes"])[0] == "no":
                continue
            for kind in fields.get("types", []):
                for uri in fields.get("uris", []):
                    for suite in fields.get("suites", []):
                        add(kind, uri, suite)
    print("\n".join(f"deb {uri} {suite} main" for uri, suite in entries))


if __name__ == "__main__":
    main()

"""Seconds from launch to a command's first line of output (stdout or stderr) and to its exit.

    python scripts/time_first_line.py -- nesterov --out /tmp/run1
    NESTEROV_CACHE=$(mktemp -d) python scripts/time_first_line.py -- nesterov --out /tmp/run2   # cold data cache

Prints ``first line X.XX s, exit Y.YY s (status S): <the first line>``.  On a shared machine take it under a lock
(``flock /tmp/nesterov-bench.lock python scripts/time_first_line.py -- ...``) so another benchmark does not run
beside it.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    first, first_at, buf = None, None, b""
    open_streams = 2
    while open_streams:
        for key, _ in sel.select():
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            if first is None:
                buf += chunk
                if b"\n" in buf or b"\r" in buf:
                    first_at = time.perf_counter() - t0
                    first = buf.replace(b"\r", b"\n").split(b"\n")[0].decode(errors="replace")
    status = proc.wait()
    total = time.perf_counter() - t0
    first_at = total if first_at is None else first_at
    print(f"first line {first_at:.2f} s, exit {total:.2f} s (status {status}): {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

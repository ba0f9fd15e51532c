"""Graceful stops for long jobs (train, md).

HPC schedulers send SIGTERM shortly before a time limit, and users press Ctrl-C: both should end
the run at the next safe point with a checkpoint, not kill it mid-write.  The loops poll a flag.
"""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT (Ctrl-C) and SIGTERM set a flag instead of killing the process.

    Yields a function returning True once a signal arrived, so the loop can checkpoint and end
    cleanly.  A second signal interrupts at once (KeyboardInterrupt).  Outside the main thread
    signals cannot be caught and are left alone.
    """
    flag = {"stop": False}
    previous = {}

    def handler(signum, _frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            pass
    try:
        yield lambda: flag["stop"]
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)

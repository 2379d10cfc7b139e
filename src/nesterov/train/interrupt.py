"""Ctrl-C during training: a request to stop at the next step boundary, where a checkpoint is exact.

A second Ctrl-C stops at once.  Many processes stop at the last evaluation's checkpoint instead (ranks may see
the signal at different steps, and a checkpoint is a collective), so the loop installs this only for a run of
one process that writes checkpoints.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["Interrupt"]


class Interrupt:
    """SIGINT as a request to stop at the next step boundary (``requested``); a second SIGINT raises at once.

    Installed only where it can be (the main thread, torch's default handler in place) and useful (a run that
    writes checkpoints); elsewhere Ctrl-C raises KeyboardInterrupt as usual.
    """

    def __init__(self, wanted: bool):
        self.wanted, self.requested, self._previous = wanted, False, None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        if (self.wanted and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

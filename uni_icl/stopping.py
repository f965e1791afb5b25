"""Stopping a command: SIGTERM (what ``timeout``, ``kill`` and job schedulers send) is handled like
SIGINT (Ctrl-C).

Both become a :class:`KeyboardInterrupt`: training saves its checkpoint at the end of the current
step (:func:`uni_icl.training.deferred_interrupt`), a command prints one line and exits with the
shell's status for the signal (:func:`exit_status`: 130 for SIGINT, 143 for SIGTERM), and the same
command resumes. This module imports nothing heavy, so ``python -m uni_icl`` installs it before
importing torch.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; the message, if any, says where work stopped."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process ended by it (Ctrl-C: SIGINT)."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted("", signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Interrupted` as SIGINT raises KeyboardInterrupt (main
    thread only; elsewhere signal handlers cannot be set and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

"""How a process is asked to stop, and what it answers: Ctrl-C (SIGINT), SIGTERM (what `timeout`,
SLURM at its time limit or on preemption, `kill` and `docker stop` send) and SIGHUP (a closed
terminal or SSH session) all become KeyboardInterrupt in the main thread, so that one path ends the
running cell KILLED (`outcome=killed`) and, in a sweep, its parent run; the process then exits
128 + the signal's number (130, 143, 129).

The signal that came is remembered: a KeyboardInterrupt raised while TensorFlow traces a function
can surface as another exception (seen: `SystemError: ... bad argument to internal function`), and
the run must still end KILLED. Handlers are installed only over the default ones: a signal the
parent process chose to ignore (a shell's background job ignores SIGINT) stays ignored.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_DEFAULT = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL}

_received: int | None = None  # the signal that asked this process to stop, since the last watch began


def _handle(signum, frame):
    global _received
    _received = signum
    raise KeyboardInterrupt


def received() -> int | None:
    return _received


def exit_code() -> int:
    """128 + the signal's number, as a shell reports a process ended by it (Ctrl-C: 130)."""
    return 128 + int(_received or signal.SIGINT)


def name() -> str:
    return "Ctrl-C" if _received in (None, signal.SIGINT) else signal.Signals(_received).name


class watching:
    """Within it, the stopping signals raise KeyboardInterrupt and are remembered. Nested or under
    another handler of this module, it leaves the outer one in place (and what it remembers)."""

    def __enter__(self):
        global _received
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in SIGNALS:
            if signal.getsignal(sig) is _DEFAULT[sig]:
                self._previous[sig] = signal.signal(sig, _handle)
        if self._previous:
            _received = None
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

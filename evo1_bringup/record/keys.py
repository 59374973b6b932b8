"""One-hand controls for `evo1 record` in its terminal: single keys, no Enter.

The same controls are the recorder node's services (recorder.CONTROLS), so a foot pedal, a GUI or
a script drives it alike. Without a terminal on stdin (a pipe, a service, a test) there are no keys.
"""

from __future__ import annotations

import os
import select
import sys
from types import TracebackType

KEYS = {
    "n": "next",  # recording: end the episode and keep it; reset: start the next one now
    " ": "next",
    "r": "rerecord",  # recording: drop this episode; reset: drop the one just saved; it is recorded again
    "s": "mark_success",
    "f": "mark_failure",
    "q": "finish",  # keep the episode that is recording (if any) and stop
    "t": "toggle_takeover",  # with --takeovers: the operator takes the arm from the policy, or gives it back
}
HELP = (
    "keys: n/space next | r re-record | s success | f failure | t takeover | q finish | Ctrl-C stop (drops the episode)"
)


class KeyReader:
    """Reads single key presses without blocking; restores the terminal on exit, whatever happens."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stdin.isatty()
        self._saved: list | None = None

    def __enter__(self) -> KeyReader:
        if self.enabled:
            import termios
            import tty

            self._saved = termios.tcgetattr(sys.stdin.fileno())
            tty.setcbreak(sys.stdin.fileno())  # keys arrive one by one; Ctrl-C still signals
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None

    def controls(self) -> list[str]:
        """The controls of the keys pressed since the last call (unknown keys are ignored)."""
        if not self.enabled:
            return []
        pressed = []
        while select.select([sys.stdin], [], [], 0)[0]:
            data = os.read(sys.stdin.fileno(), 64).decode(errors="ignore")
            if not data:
                break
            pressed += [KEYS[c] for c in data.lower() if c in KEYS]
        return pressed

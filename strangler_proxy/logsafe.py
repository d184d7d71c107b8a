"""Value-free, rate-limited log lines for refused requests.

Why: a refused header line used to be logged verbatim with a traceback, which put admin
tokens and users' cookies into the log. A refusal is now one line naming the client address,
the status, the reason (the proxy's own words or an exception class, never input bytes), at
most `per_second` lines a second; what is held back is counted and reported in the next line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RejectionLog:
    """One line per refused request, at most `per_second` of them a second."""

    def __init__(
        self,
        logger: logging.Logger,
        per_second: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.per_second = per_second
        self.clock = clock
        self._second = -1
        self._lines = 0
        self.suppressed = 0

    def note(self, remote: str, status: int, reason: str) -> bool:
        """Log (or count) one refusal; True when a line was written."""
        second = int(self.clock())
        if second != self._second:
            self._second, self._lines = second, 0
        if self._lines >= self.per_second:
            self.suppressed += 1
            return False
        self._lines += 1
        held, self.suppressed = self.suppressed, 0
        more = f" ({held} more refusals not logged)" if held else ""
        self.logger.warning("refused request from %s: %d %s%s", remote, status, reason, more)
        return True

"""The loopback HTTP servers' common base: a client that hangs up mid-answer (a deadline, a range read
that has what it needs, an aborted download) is normal in these tests, not a traceback on stderr."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away
        super().handle_error(request, client_address)

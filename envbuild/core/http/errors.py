"""What reading an index or a remote file can fail with: shared by the index client and the range reader."""

from __future__ import annotations

from envbuild.core.errors import EnvbuildError
from envbuild.core.runner import redact

RETRIED = (429, 500, 502, 503, 504)  # worth another try


class Retryable(Exception):
    """A range read hit a 5xx: worth another try."""


class IndexReadError(EnvbuildError):
    """An index answered nothing usable for one URL: the report names the URL and why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{redact(url)}: {reason}")
        self.url = redact(url)
        self.reason = reason

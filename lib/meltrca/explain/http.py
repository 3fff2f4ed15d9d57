"""POST JSON over HTTP with timeouts and retries (stdlib urllib), for the LLM writer and webhooks.

Retryable: 408, 429, 5xx, timeouts, refused/reset connections. Other 4xx fail at once (a bad
request or a bad key does not get better by repeating it). Backoff doubles from
``backoff_seconds`` and honours a numeric Retry-After. Failures carry a short reason code
(``http-500``, ``timeout``, ``connection-error``, ...) and never the request headers, so a
credential in an Authorization header cannot leak into a message.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """attempts = first try + retries; each attempt times out after timeout_seconds."""

    attempts: int
    backoff_seconds: float
    timeout_seconds: float

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = self.backoff_seconds * (2 ** (attempt - 1))
        if retry_after is not None:
            base = max(base, retry_after)
        return min(base, MAX_BACKOFF_SECONDS)


class HTTPFailure(Exception):
    """The request did not succeed; ``reason`` is a short code, ``attempts`` how many were made."""

    def __init__(self, reason: str, attempts: int, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.status = status


def _retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    raw = (headers or {}).get("Retry-After")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class JsonPoster:
    """One HTTP client (a urllib opener; the usual *_proxy environment variables apply)."""

    def __init__(self, policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy
        self.sleep = sleep
        self.opener = urllib.request.build_opener()

    def post_once(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, float | None]:
        """One attempt: (status, body, retry-after seconds). Raises HTTPFailure(retryable codes) on I/O errors."""
        req = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
        try:
            with self.opener.open(req, timeout=self.policy.timeout_seconds) as resp:
                return resp.status, resp.read(), None
        except urllib.error.HTTPError as exc:
            try:
                payload = exc.read()
            except Exception:
                payload = b""
            return exc.code, payload, _retry_after(exc.headers)
        except TimeoutError:
            raise HTTPFailure("timeout", 1) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise HTTPFailure("timeout", 1) from None
            raise HTTPFailure("connection-error", 1) from None
        except (http.client.HTTPException, ConnectionError, OSError):
            raise HTTPFailure("connection-error", 1) from None

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, int]:
        """POST until a 2xx or a non-retryable answer: (status, body, attempts made).

        Raises HTTPFailure when attempts run out or the answer is a non-retryable error status.
        """
        last = "connection-error"
        status: int | None = None
        for attempt in range(1, self.policy.attempts + 1):
            retry_after = None
            try:
                status, payload, retry_after = self.post_once(url, body, headers)
            except HTTPFailure as exc:
                last, status = exc.reason, None
            else:
                if 200 <= status < 300:
                    return status, payload, attempt
                last = f"http-{status}"
                if not _retryable_status(status):
                    raise HTTPFailure(last, attempt, status)
            if attempt < self.policy.attempts:
                self.sleep(self.policy.delay(attempt, retry_after))
        raise HTTPFailure(last, self.policy.attempts, status)

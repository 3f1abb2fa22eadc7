"""One signed webhook request: the address guard checks the URL, the request goes to the checked
address (the name kept for the Host header and TLS), 15 s at most, no redirects, and only a
capped part of the answer is read. Used by the dispatcher and by an endpoint's test send."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from infra.address_guard import Refused, Resolver, Target, check_url
from infra.settings import Settings
from infra.webhook_signing import signed_headers
from schemas.envelope import current_traceparent

RESOLVE_SECONDS = 5.0
MAX_RETRY_AFTER_SECONDS = 86400.0


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry_after: float | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds (a number or an HTTP date), capped at a day."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def http_client(settings: Settings) -> httpx.AsyncClient:
    # no proxies from the environment: a request must go to the address the guard checked
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=settings.webhook_timeout_seconds)


class WebhookSender:
    def __init__(self, http: httpx.AsyncClient, settings: Settings, resolver: Resolver) -> None:
        self._http = http
        self._settings = settings
        self._resolver = resolver

    async def send(self, url: str, secrets: list[str], *, msg_id: str, body: bytes) -> Outcome:
        started = time.monotonic()
        status_code, error, retry_after = None, None, None
        try:
            target = await self.check(url)
            status_code, retry_after_header = await asyncio.wait_for(
                self._post(target, secrets, msg_id, body), self._settings.webhook_timeout_seconds
            )
            retry_after = retry_after_seconds(retry_after_header, datetime.now(UTC))
        except Refused as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"no answer within {self._settings.webhook_timeout_seconds:g} s"
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = int((time.monotonic() - started) * 1000)
        return Outcome(status_code=status_code, error=error, retry_after=retry_after, duration_ms=duration_ms)

    async def check(self, url: str) -> Target:
        """The address guard's verdict on ``url`` under this deployment's settings (``Refused``)."""
        try:
            return await asyncio.wait_for(
                check_url(
                    url,
                    allow_loopback=self._settings.webhook_allow_loopback,
                    allow_http=self._settings.webhook_allow_http,
                    resolver=self._resolver,
                ),
                RESOLVE_SECONDS,
            )
        except TimeoutError:
            raise Refused("its name did not resolve") from None

    async def _post(self, target: Target, secrets: list[str], msg_id: str, body: bytes) -> tuple[int, str | None]:
        parts = urlsplit(target.url)
        address = f"[{target.address}]" if ":" in target.address else target.address
        pinned = urlunsplit((parts.scheme, f"{address}:{target.port}", parts.path or "/", parts.query, ""))
        headers = signed_headers(secrets, msg_id=msg_id, timestamp=int(time.time()), body=body)
        headers["host"] = parts.netloc.rsplit("@", 1)[-1]
        headers["user-agent"] = "pgplane-webhooks"
        if traceparent := current_traceparent():  # the receiver can join the trace
            headers["traceparent"] = traceparent
        extensions = {"sni_hostname": target.host} if target.https else {}
        async with self._http.stream("POST", pinned, content=body, headers=headers, extensions=extensions) as response:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= self._settings.webhook_max_response_bytes:
                    break
            return response.status_code, response.headers.get("retry-after")

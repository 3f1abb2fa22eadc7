"""Where a webhook may be sent: an https URL whose name resolves only to global addresses.

Private, shared, link-local (cloud metadata lives there), multicast, reserved and unspecified
addresses are refused, and so is loopback unless the deployment allows it (the local stack does,
so a newcomer can point a webhook at a receiver on the same machine). A name is checked at
registration and again before every send, and the send goes to the address that was checked
(``Target``), so a name that later resolves elsewhere (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Host name and port → the addresses it resolves to."""

METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class Refused(ValueError):
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    address: str
    """The checked address the request connects to."""

    @property
    def https(self) -> bool:
        return self.url.startswith("https:")


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_address(address: str, *, allow_loopback: bool) -> None:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        raise Refused(f"{address} is a cloud metadata address")
    if ip.is_loopback:
        if allow_loopback:
            return
        raise Refused(f"{address} is a loopback address")
    if not ip.is_global or ip.is_multicast:
        raise Refused(f"{address} is not a public address")


async def check_url(url: str, *, allow_loopback: bool, allow_http: bool, resolver: Resolver) -> Target:
    """The address to send to, or ``Refused``."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Refused("the URL must be https://host/...")
    if parts.scheme == "http" and not allow_http:
        raise Refused("the URL must use https")
    if parts.username or parts.password:
        raise Refused("the URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(f"the URL's port is not valid: {exc}") from None
    host = parts.hostname
    try:
        addresses = [host] if _is_address(host) else await resolver(host, port)
    except OSError as exc:
        raise Refused(f"{host} does not resolve: {exc}") from None
    if not addresses:
        raise Refused(f"{host} does not resolve")
    for address in addresses:
        check_address(address, allow_loopback=allow_loopback)
    return Target(url=url, host=host, port=port, address=addresses[0])


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

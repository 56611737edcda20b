"""Outbound address policy: which networks api_service may call (SSRF protection).

Public (globally routable) addresses are always allowed; every other address — loopback,
link-local (169.254.0.0/16, where clouds serve instance metadata), private, shared (CGNAT),
reserved, multicast, unspecified, IPv4-mapped forms of those — only inside an allowed network
(``PACA_API_ALLOWED_NETWORKS``). The check is made on the addresses actually connected to, at
three points:

- a literal IP in the request URL, before anything is sent (PERMISSION_DENIED, not recorded);
- DNS answers, in the aiohttp resolver: blocked answers are dropped, and a name with no allowed
  answer fails (so a public name pointing at 169.254.169.254 is refused);
- every socket aiohttp opens (its ``socket_factory``), which also covers redirects to literal
  IPs, since aiohttp does not resolve those.

Hand-written: the policy is a few lines over ``ipaddress``; the hooks are aiohttp's own.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from api_service.errors import ForbiddenTarget

# The embedded default: this host's own services (``make run``'s monitor on 127.0.0.1:9464).
LOOPBACK = "127.0.0.0/8,::1/128"
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Distinct URL netlocs whose verdict check_url remembers; past that it starts over.
MAX_REMEMBERED_NETLOCS = 4096


class BlockedAddress(OSError):
    """Raised inside aiohttp when every address of a host is outside the allowed networks."""


class NetworkPolicy:
    """Decides whether an address may be called.

    Args:
        allowed: Non-public networks that may be called anyway (e.g. 127.0.0.0/8).
    """

    def __init__(self, allowed: Sequence[IpNetwork] = ()) -> None:
        self.allowed = tuple(allowed)
        # check_url runs on every call: its verdicts by URL netloc (None: no literal IP to
        # refuse, else the refused host), so ``ipaddress`` parses each netloc once.
        self._netlocs: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"<NetworkPolicy allowed={[str(n) for n in self.allowed]}>"

    def permits(self, address: str | IpAddress) -> bool:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address):
            ip = ip.ipv4_mapped or ip.sixtofour or ip
            if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
                ip = ipaddress.IPv6Address(str(ip).partition("%")[0])
        if any(ip in network for network in self.allowed if network.version == ip.version):
            return True
        return ip.is_global and not ip.is_multicast

    def check_url(self, url: str) -> None:
        """Refuse a URL whose host is a literal IP outside the policy (names are checked later)."""
        parts = urlsplit(url)
        try:
            refused = self._netlocs[parts.netloc]
        except KeyError:
            refused = self._refused_host(parts.hostname or "")
            if len(self._netlocs) >= MAX_REMEMBERED_NETLOCS:
                self._netlocs.clear()
            self._netlocs[parts.netloc] = refused
        if refused is not None:
            raise ForbiddenTarget(refused)

    def _refused_host(self, host: str) -> str | None:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        return None if self.permits(ip) else host

    def socket_factory(self, addr_info: aiohttp.AddrInfoType) -> socket.socket:
        """aiohttp's socket factory: every connection's address passes the policy first."""
        family, type_, proto, _, sockaddr = addr_info
        if not self.permits(str(sockaddr[0])):
            raise BlockedAddress(f"{sockaddr[0]} is outside the allowed networks")
        return socket.socket(family, type_, proto)


class GuardedResolver(AbstractResolver):
    """aiohttp's default resolver with the answers the policy refuses taken out."""

    def __init__(self, policy: NetworkPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [a for a in answers if self.policy.permits(a["host"])]
        if not allowed:
            raise BlockedAddress(f"{host} resolves only to addresses outside the allowed networks")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def parse_networks(text: str) -> list[IpNetwork]:
    """Comma-separated CIDR networks (``127.0.0.0/8,::1``); raises ValueError naming the bad one."""
    networks: list[IpNetwork] = []
    for part in text.split(","):
        if part.strip():
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
    return networks

"""The SSRF policy of ``http_request``: which addresses a flow may not reach (SPEC §5).

Two checks enforce it, because neither alone sees every connection:

- :class:`SsrfSafeResolver` checks every address a hostname resolves to, at connection time,
  so DNS tricks (a public name pointing at ``127.0.0.1``, rebinding) are caught where the
  socket is opened;
- :func:`check_url` checks the URL's host before each request and each redirect hop, because
  aiohttp never calls the resolver for IP-literal hosts such as ``http://10.0.0.1/``.

``HTTP_ALLOW_HOSTS`` (:class:`AllowedHosts`) names the exceptions — a GPU box or Ollama on the
LAN — without turning the guard off: a listed name may resolve to anything, a listed address
may be reached by literal or through any name resolving to it, and everything else is still
checked. An entry with a port allows that port only.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from nodes import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Carrier-grade NAT: not "private" in every Python version's ipaddress, but never public.
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
# NAT64 well-known prefix: the last 32 bits are an IPv4 address a gateway would connect to.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_blocked_address(address: IPAddress) -> bool:
    """Whether ``address`` is loopback, private, link-local, CGNAT, multicast or reserved.

    IPv6 addresses that embed an IPv4 address (``::ffff:127.0.0.1``, 6to4, NAT64) are judged
    by the IPv4 address they lead to.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_blocked_address(embedded)
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, or None when it is a name to resolve.

    Besides canonical forms, legacy IPv4 spellings that the C resolver maps onto an address
    (``127.1``, ``2130706433``, ``0x7f.0.0.1``) count as literals, so they cannot slip past.
    No network I/O happens here.
    """
    try:
        # A zone id ("fe80::1%eth0") names an interface, not part of the address.
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, UnicodeError, ValueError):
        return None


def _canonical_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    address = parse_ip_literal(host.strip("[]"))
    return str(address) if address is not None else host


@dataclass(frozen=True)
class AllowedHosts:
    """The hosts ``HTTP_ALLOW_HOSTS`` lets through the guard, each with a port or any port.

    Attributes:
        entries: ``(host, port)`` pairs, the host canonical (lower case, addresses in their
            standard form), the port None for any port.
    """

    entries: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def parse(cls, items: Iterable[str]) -> AllowedHosts:
        """Read ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` entries.

        Raises:
            ValueError: an entry is empty or its port is not a number in 1–65535.
        """
        return cls(frozenset(_parse_entry(item) for item in items))

    def allows(self, host: str, port: int | None) -> bool:
        """Whether ``host`` (a name or an address) on ``port`` is listed."""
        if not self.entries:
            return False
        key = _canonical_host(host)
        return (key, None) in self.entries or (port is not None and (key, port) in self.entries)


def _parse_entry(item: str) -> tuple[str, int | None]:
    text = item.strip()
    host, port = text, None
    if text.startswith("[") and "]" in text:
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{item!r} is not a host, host:port or [ipv6]:port")
    return _canonical_host(host), None if port is None else int(port)


def check_url(url: URL, *, allow_private: bool, allow_hosts: AllowedHosts | None = None) -> None:
    """Refuse a URL whose host is a blocked IP literal, unless it is listed in ``allow_hosts``.

    Hostnames are left to :class:`SsrfSafeResolver`, which sees what they resolve to.

    Raises:
        errors.SsrfBlocked: the host is a blocked address and ``allow_private`` is false.
    """
    if allow_private or url.host is None:
        return
    if allow_hosts is not None and allow_hosts.allows(url.host, url.port):
        return
    address = parse_ip_literal(url.host)
    if address is not None and is_blocked_address(address):
        raise errors.SsrfBlocked(
            f"refused to connect to {url.host}: address {address} is not public"
        )


class SsrfSafeResolver(AbstractResolver):
    """A resolver that refuses hostnames resolving to any blocked address.

    It wraps another resolver (aiohttp's default unless given) and checks every address the
    lookup returns; one blocked address refuses the whole name, so a DNS answer that mixes a
    public and a private address cannot steer the connection to the private one.

    Args:
        inner: the resolver that does the lookup; created on first use when None.
        allow_private: when true, nothing is refused.
        allow_hosts: names (reached whatever they resolve to) and addresses (reached by any
            name resolving to them) that are let through, optionally on one port only.
    """

    def __init__(
        self, inner: AbstractResolver | None = None, *, allow_private: bool = False,
        allow_hosts: AllowedHosts | None = None,
    ) -> None:
        self._inner = inner
        self._allow_private = allow_private
        self._allow_hosts = allow_hosts or AllowedHosts()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and refuse it if any address is blocked.

        Raises:
            errors.SsrfBlocked: an address is blocked and private addresses are not allowed.
            OSError: the lookup failed (aiohttp reports it as a connection error).
        """
        if self._inner is None:
            # DefaultResolver needs the running loop, which exists only once a request runs.
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        if self._allow_private or self._allow_hosts.allows(host, port):
            return results
        for result in results:
            if not self._allow_hosts.allows(str(result["host"]), port):
                _refuse_if_blocked(host, result)
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        if self._inner is not None:
            await self._inner.close()


def _refuse_if_blocked(host: str, result: ResolveResult | dict[str, Any]) -> None:
    address = parse_ip_literal(str(result["host"]))
    # An answer we cannot read as an address is refused rather than trusted.
    if address is None or is_blocked_address(address):
        raise errors.SsrfBlocked(
            f"refused to connect to {host}: it resolves to {result['host']}, which is not public"
        )


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector resolving through :class:`SsrfSafeResolver`, carrying its policy.

    ``allow_private`` and ``allow_hosts`` are kept on the connector so that code holding only
    the session (``ctx.http``) applies the same policy to IP-literal URLs with
    :func:`check_url`, which the resolver never sees.
    """

    def __init__(self, *, allow_private: bool, allow_hosts: AllowedHosts | None = None) -> None:
        self.allow_private = allow_private
        self.allow_hosts = allow_hosts or AllowedHosts()
        super().__init__(resolver=SsrfSafeResolver(allow_private=allow_private, allow_hosts=self.allow_hosts))


def check_session_url(session: aiohttp.ClientSession, url: URL, *, allow_private: bool) -> None:
    """:func:`check_url` under the policy of ``session``'s connector (``allow_private`` if it has none).

    Raises:
        errors.SsrfBlocked: the host is a blocked address the policy does not let through.
    """
    connector = session.connector
    if isinstance(connector, GuardedConnector):
        check_url(url, allow_private=connector.allow_private, allow_hosts=connector.allow_hosts)
    else:
        check_url(url, allow_private=allow_private)

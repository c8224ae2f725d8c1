"""The SSRF policy: which addresses are refused, by literal check and by resolver."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from yarl import URL

from nodes import errors
from nodes.builtin import ssrf


class StubResolver:
    """Answers lookups from a table, so no DNS query leaves the machine."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.closed = False

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        if host not in self.table:
            raise OSError(None, f"no such host {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": family,
                "proto": 0,
                "flags": 0,
            }
            for address in self.table[host]
        ]

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",
        "64:ff9b::a00:1",
    ],
)
def test_non_public_addresses_are_blocked(address) -> None:
    assert ssrf.is_blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address) -> None:
    assert not ssrf.is_blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1:8080/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1%25eth0]/",
        # Legacy IPv4 spellings the C resolver maps onto 127.0.0.1.
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
    ],
)
def test_check_url_refuses_blocked_literals(url) -> None:
    with pytest.raises(errors.SsrfBlocked) as caught:
        ssrf.check_url(URL(url), allow_private=False)

    assert caught.value.code == "ssrf_blocked"
    assert not caught.value.retryable


def test_check_url_leaves_names_and_public_literals_alone() -> None:
    for url in ("http://localhost/", "https://example.com/", "http://93.184.216.34/"):
        ssrf.check_url(URL(url), allow_private=False)


def test_check_url_allows_everything_when_private_is_allowed() -> None:
    ssrf.check_url(URL("http://127.0.0.1/"), allow_private=True)


async def test_resolver_refuses_a_name_with_any_private_address() -> None:
    resolver = ssrf.SsrfSafeResolver(StubResolver({"mixed.test": ["93.184.216.34", "10.0.0.7"]}))

    with pytest.raises(errors.SsrfBlocked, match=r"mixed\.test.*10\.0\.0\.7"):
        await resolver.resolve("mixed.test", 80)


async def test_resolver_passes_public_answers_through() -> None:
    resolver = ssrf.SsrfSafeResolver(StubResolver({"public.test": ["93.184.216.34"]}))

    [result] = await resolver.resolve("public.test", 443)

    assert result["host"] == "93.184.216.34"
    assert result["port"] == 443


async def test_resolver_allows_private_answers_when_told() -> None:
    resolver = ssrf.SsrfSafeResolver(StubResolver({"db.test": ["10.0.0.7"]}), allow_private=True)

    assert [r["host"] for r in await resolver.resolve("db.test")] == ["10.0.0.7"]


async def test_resolver_close_closes_the_inner_resolver() -> None:
    inner = StubResolver({})
    await ssrf.SsrfSafeResolver(inner).close()

    assert inner.closed

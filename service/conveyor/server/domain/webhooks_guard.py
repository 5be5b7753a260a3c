"""The SSRF guard: where a webhook may be sent, decided once per attempt, then pinned.

A callback URL is chosen by whoever creates a task, so without a guard it is a way to
make the server call its own network: the metadata service, the database, an admin
port on localhost. The guard resolves the host and refuses loopback, private,
link-local, multicast, reserved and unspecified addresses, IPv4 addresses inside IPv6
(mapped, 6to4, Teredo, NAT64), and numeric spellings of IPv4 that resolvers accept but
people do not read as addresses (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`). The
request then goes to the very address that was checked, with the original Host header
and TLS server name, so a DNS answer that changes between check and connect (rebinding)
cannot redirect it.

`allow` (Settings.webhook_allow, CONVEYOR_WEBHOOK_ALLOW) admits CIDRs (`127.0.0.1/32`,
`10.0.0.0/8`) and host names (`hooks.internal`) despite the rules, for tests and
private deployments.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

__all__ = ["Refused", "Resolver", "Target", "WebhookGuard", "system_resolver"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses it resolves to, as text."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
RESOLVE_TIMEOUT = 5.0


class Refused(Exception):
    """The URL may not be called. `permanent`: no later attempt can change that (the
    URL itself is the problem), as opposed to what a host name resolves to today."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Target:
    """Where to send: `url` has the checked address in place of the host name."""

    url: str
    host_header: str
    server_name: str | None
    """The TLS server name (SNI and certificate check) for https, else None."""
    address: IPAddress


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """What the C library's inet_aton makes of `host` (which getaddrinfo honours), or
    None when it is not a numeric IPv4 spelling: 1 to 4 parts, each decimal, 0x hex or
    0 octal, the last filling the remaining bytes."""
    text = host[:-1] if host.endswith(".") else host
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        try:
            if part.startswith(("0x", "0X")):
                numbers.append(int(part[2:], 16) if part[2:] else 0)
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part, 10))
        except ValueError:
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value << 8 | n
    value = value << 8 * (4 - len(head)) | last
    return ipaddress.IPv4Address(value)


def _blocked(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        embedded: ipaddress.IPv4Address | None = address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and _blocked(embedded) is not None:
            return "an IPv6 address with a non-public IPv4 address inside"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
    )
    for name, hit in checks:
        if hit:
            return f"{'an' if name[0] in 'aeiou' else 'a'} {name} address"
    if not address.is_global:
        return "not a public address"
    return None


class WebhookGuard:
    def __init__(self, allow: Iterable[str] = (), resolver: Resolver | None = None) -> None:
        self._networks: list[IPNetwork] = []
        self._hosts: set[str] = set()
        for entry in allow:
            text = entry.strip().lower()
            if not text:
                continue
            try:
                self._networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            host = text.rstrip(".")
            if not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
                raise ValueError(f"webhook_allow: {entry!r} is neither a CIDR nor a host name")
            self._hosts.add(host)
        self._resolve = resolver or system_resolver

    def allowed(self, address: IPAddress) -> bool:
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in network for a in candidates for network in self._networks)

    def _check_address(self, address: IPAddress, what: str, *, permanent: bool) -> None:
        if self.allowed(address):
            return
        reason = _blocked(address)
        if reason is not None:
            raise Refused(f"{what} is {reason}", permanent=permanent)

    async def check(self, url: str) -> Target:
        """The target to connect to for `url`; raises Refused."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as error:
            raise Refused(f"the URL is not valid: {error}", permanent=True) from None
        if parts.scheme not in ("http", "https"):
            raise Refused("only http and https URLs are called", permanent=True)
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise Refused("the URL has no host", permanent=True)
        if "%" in host:
            raise Refused("IPv6 zone identifiers are refused", permanent=True)
        literal = self._literal(host)
        if literal is not None:
            self._check_address(literal, f"{host}", permanent=True)
            return self._target(parts, host, port, literal)
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise Refused(f"{host!r} is not a valid host name", permanent=True) from None
        by_name = ascii_host in self._hosts
        try:
            answers = await self._resolve(ascii_host, port)
        except (OSError, TimeoutError) as error:
            raise Refused(f"{ascii_host} did not resolve: {error}", permanent=False) from None
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                addresses.append(ipaddress.ip_address(answer.split("%", 1)[0]))
            except ValueError:
                continue
        if not addresses:
            raise Refused(f"{ascii_host} resolved to no address", permanent=False)
        if not by_name:
            # Every answer, not only the one used: a name that mixes public and private
            # answers is how rebinding attacks start.
            for address in addresses:
                self._check_address(address, f"{ascii_host} ({address})", permanent=False)
        return self._target(parts, ascii_host, port, addresses[0])

    def _literal(self, host: str) -> IPAddress | None:
        """The address `host` spells, if it spells one; Refused for sly spellings."""
        if ":" in host:
            try:
                return ipaddress.IPv6Address(host)
            except ValueError:
                raise Refused(f"{host!r} is not a valid IPv6 address", permanent=True) from None
        if not _NUMERIC_HOST.fullmatch(host) or not all(
            label[:1].isdigit() for label in host.split(".")
        ):
            return None
        try:
            canonical = ipaddress.IPv4Address(host)
        except ValueError:
            canonical = None
        if canonical is not None and str(canonical) == host:
            return canonical
        spelled = _inet_aton(host)
        if spelled is None:
            raise Refused(f"{host!r} is neither a host name nor an address", permanent=True)
        if self.allowed(spelled):
            return spelled
        raise Refused(
            f"{host!r} is a numeric spelling of {spelled}; write addresses as a.b.c.d",
            permanent=True,
        )

    @staticmethod
    def _target(parts: SplitResult, host: str, port: int, address: IPAddress) -> Target:
        default_port = 443 if parts.scheme == "https" else 80
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # admitted by the allowlist; no dual-stack needed
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = literal if port == default_port else f"{literal}:{port}"
        userinfo = parts.netloc.rpartition("@")[0]
        if userinfo:
            netloc = f"{userinfo}@{netloc}"
        shown_host = f"[{host}]" if ":" in host else host
        host_header = shown_host if port == default_port else f"{shown_host}:{port}"
        url = parts._replace(netloc=netloc).geturl()
        return Target(
            url=url,
            host_header=host_header,
            server_name=host if parts.scheme == "https" and ":" not in host else None,
            address=address,
        )

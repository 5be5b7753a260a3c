"""host:port addresses as the settings, the listeners and server.json spell them."""

from __future__ import annotations

import ipaddress

__all__ = ["connectable_host", "format_address", "parse_address"]

# Hosts that mean "every interface": fine to bind, useless to connect to.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def parse_address(address: str) -> tuple[str, int]:
    """Split "host:port" (or "[v6]:port") into its parts; raise ValueError when malformed.

    Port 0 is allowed: it asks the kernel for a free port.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {address!r} must be host:port, e.g. 127.0.0.1:50051")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        _require_ipv6(host, address)
    elif ":" in host:
        raise ValueError(f"address {address!r}: write an IPv6 host in brackets, e.g. [::1]:50051")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"address {address!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of parse_address: brackets IPv6 hosts so the port stays unambiguous."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connectable_host(host: str) -> str:
    """The host a local client should dial to reach a listener bound on `host`."""
    if host in _WILDCARD_HOSTS:
        return "::1" if host == "::" else "127.0.0.1"
    return host


def _require_ipv6(host: str, address: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"address {address!r}: {host!r} is not an IPv6 address") from None

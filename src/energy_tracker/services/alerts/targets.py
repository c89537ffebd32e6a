"""Where a webhook may point: http(s) only, never at link-local or cloud-metadata addresses,
and with ET_WEBHOOK_DENY_PRIVATE=1 never at loopback or private ones either.

A hostname is resolved and every address it resolves to is checked, at rule creation (a 422)
and again before each send (DNS can change in between); the sender then connects to the very
address that was checked, so a second, different answer cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DNS_TIMEOUT_S = 5.0

# Cloud instance-metadata endpoints outside link-local space (AWS IPv6, Alibaba), and the names
# that lead to them; 169.254.169.254 itself is link-local.
_METADATA_NETWORKS = (
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),
)
_METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "169.254.169.254"}
)


class UnsafeTarget(ValueError):
    """A webhook URL that must not be called, and why."""


def split_webhook_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL with a host; UnsafeTarget saying what is wrong otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("must be an http:// or https:// URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeTarget("has no host")
    if host in _METADATA_HOSTS:
        raise UnsafeTarget(f"{host} is a cloud metadata service")
    return host, port or (443 if parts.scheme == "https" else 80)


def refusal(address: IPAddress, deny_private: bool) -> str | None:
    """Why a webhook must not connect to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in _METADATA_NETWORKS):
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "not a routable address"
    if deny_private and not address.is_global:
        return "a loopback or private address (refused: ET_WEBHOOK_DENY_PRIVATE=1)"
    return None


async def resolve_webhook(url: str, deny_private: bool) -> list[IPAddress]:
    """Every address the URL's host resolves to, all of them allowed; UnsafeTarget otherwise."""
    host, port = split_webhook_url(url)
    literal = True
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        literal = False
        try:
            async with asyncio.timeout(DNS_TIMEOUT_S):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError):
            raise UnsafeTarget(f"host {host} does not resolve") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    for address in addresses:
        reason = refusal(address, deny_private)
        if reason is not None:
            # The address a name resolves to is not shown: it would map internal networks.
            raise UnsafeTarget(f"{host} {'is' if literal else 'resolves to'} {reason}")
    return addresses

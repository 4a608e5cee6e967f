"""Webhooks of audits: the allowlist, the signature, one delivery attempt, backoff.

An admin lists the hosts a webhook may reach (``BOTTLELENS_WEBHOOK_ALLOWLIST``):
host names (``hooks.example.com``, ``*.example.com``), addresses or CIDR networks
(``127.0.0.1``, ``10.1.0.0/16``). A URL is checked twice:

- at creation, its host must be a listed name, or an address inside a listed
  network;
- at each delivery, the host is resolved and every address must be inside a listed
  network, or be public (``ipaddress``'s ``is_global``) for a listed name. So a
  listed name that resolves to loopback, link-local or a private range is refused
  unless a network entry names that range. The request goes to the address that
  was checked (no second lookup) and redirects are not followed.

The body is signed with HMAC-SHA256 under ``BOTTLELENS_WEBHOOK_SECRET``; the header
``X-Bottlelens-Signature: sha256=<hex>`` lets a receiver check it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from service.errors import InvalidInput

SIGNATURE_HEADER = "X-Bottlelens-Signature"
MAX_BACKOFF_S = 3600.0
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookRefused(InvalidInput):
    """A webhook URL whose host the allowlist does not allow."""

    code = "webhook_refused"


@dataclass(frozen=True)
class Allowlist:
    names: tuple[str, ...]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, entries: Sequence[str]) -> Allowlist:
        names: list[str] = []
        networks: list[Network] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                names.append(entry.strip().lower().rstrip("."))
        return cls(tuple(names), tuple(networks))

    def names_host(self, host: str) -> bool:
        return any(fnmatchcase(host, pattern) for pattern in self.names)

    def contains(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower case, no brackets
    port: int
    path: str  # with the query


def parse_url(url: str) -> Target:
    """The parts of an ``http(s)://host[:port]/path`` URL; WebhookRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"webhook_url is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook_url must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("webhook_url must not carry a user name or password")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname.lower().rstrip(".")
    return Target(parts.scheme, host, port or default, path)


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, allowlist: Sequence[str]) -> Target:
    """At creation: the URL's host is a listed name or inside a listed network."""
    target = parse_url(url)
    allowed = Allowlist.parse(allowlist)
    literal = _address(target.host)
    ok = allowed.contains(literal) if literal else allowed.names_host(target.host)
    if not ok:
        raise WebhookRefused(
            f"webhook host {target.host!r} is not on the allowlist; an admin lists "
            "the hosts webhooks may reach in BOTTLELENS_WEBHOOK_ALLOWLIST",
            problems=[f"webhook_url: host {target.host!r} is not allowed"],
        )
    return target


def resolve(target: Target, allowlist: Sequence[str]) -> Address:
    """At delivery: the address to connect to, after checking every address the
    host resolves to. WebhookRefused when one is not allowed."""
    allowed = Allowlist.parse(allowlist)
    literal = _address(target.host)
    if literal is not None:
        found = [literal]
    else:
        try:
            infos = socket.getaddrinfo(
                target.host, target.port, proto=socket.IPPROTO_TCP
            )
        except OSError as exc:
            raise WebhookRefused(
                f"webhook host {target.host!r} does not resolve"
            ) from exc
        found = [ipaddress.ip_address(info[4][0]) for info in infos]
    named = literal is None and allowed.names_host(target.host)
    for address in found:
        if not (allowed.contains(address) or (named and address.is_global)):
            raise WebhookRefused(
                f"webhook host {target.host!r} resolves to {address}, which is not "
                "allowed (loopback, link-local and private addresses need a network "
                "entry in BOTTLELENS_WEBHOOK_ALLOWLIST)"
            )
    if not found:
        raise WebhookRefused(f"webhook host {target.host!r} has no address")
    return found[0]


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC of the body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff_s(attempts: int, base_s: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: doubling."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the certificate checked for the host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(
    url: str,
    body: bytes,
    *,
    secret: str,
    allowlist: Sequence[str],
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> int:
    """One delivery attempt; the response status. WebhookRefused when the host is
    not allowed now, OSError (or http.client's errors) when it cannot be reached."""
    target = parse_url(url)
    check_url(url, allowlist)
    address = str(resolve(target, allowlist))
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = _PinnedHTTPS(target.host, address, target.port, timeout_s)
    else:
        conn = http.client.HTTPConnection(address, target.port, timeout=timeout_s)
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    try:
        conn.request(
            "POST",
            target.path,
            body=body,
            headers={
                "Host": f"{host_header}:{target.port}",
                "Content-Type": "application/json",
                "User-Agent": "bottlelens-webhook",
                SIGNATURE_HEADER: sign(secret, body),
                **(headers or {}),
            },
        )
        response = conn.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        conn.close()

"""What sandboxed code may reach: the allow-list (`NetworkPolicy`) and the host-side HTTP proxy.

A native session with network has a network namespace of its own holding only a loopback device,
and one way out: a listening socket on its loopback whose connections the host accepts (`Proxy`).
The proxy speaks HTTP (absolute-form requests and CONNECT tunnels), resolves names itself,
connects only to what the policy allows, and records every connection it allowed or refused.

Entries of `network=[...]`: a host name (`api.example.com`), a wildcard over subdomains
(`*.github.com`), `*` (every public host), an IP address or a CIDR range (`10.0.0.0/8`), each with an
optional `:port` (without one, ports 80 and 443; `:*` any port). Addresses that are not global (loopback, private, link-local such
as the cloud metadata service) are refused unless an IP or range entry lists them, even when an
allowed name resolves to one. `network=True` allows every name and global address on any port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from codeact.sandbox.interpreter import Connection

DEFAULT_PORTS = (80, 443)
_HEAD_LIMIT = 64 << 10
MAX_CONNECTIONS = 64  # open at once per session: each is a host thread
_CONNECT_TIMEOUT = 10.0
_IDLE_TIMEOUT = 300.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rule:
    """One allow-list entry: a name, a `*.` wildcard or an address range, and its ports."""

    entry: str
    name: str = ""  # lower-case host name, or "*.suffix"
    network: Network | None = None
    ports: tuple[int, ...] = DEFAULT_PORTS  # empty: any port

    @classmethod
    def parse(cls, entry: str) -> Rule:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"network entries must be host names like 'api.example.com', got {entry!r}")
        text = entry.strip().lower()
        for prefix in ("http://", "https://"):
            if text.startswith(prefix):
                raise ValueError(f"network entry {entry!r}: write the host (and :port), not a URL")
        host, ports = text, DEFAULT_PORTS
        if text.startswith("["):  # [v6]:port
            host, _, rest = text[1:].partition("]")
            if rest:
                ports = _ports_of(rest.removeprefix(":"), entry)
        elif text.count(":") == 1:
            host, port = text.split(":")
            ports = _ports_of(port, entry)
        try:
            return cls(entry.strip(), network=ipaddress.ip_network(host, strict=False), ports=ports)
        except ValueError:
            pass
        if host == "*":  # every public host (and the ranges other entries list)
            return cls(entry.strip(), name="*", ports=ports)
        label = host.removeprefix("*.")
        if not label or any(not part or not all(c.isalnum() or c in "-_" for c in part) for part in label.split(".")):
            raise ValueError(
                f"network entry {entry!r} is not a host name, '*.domain', IP address or range (with an optional :port)"
            )
        return cls(entry.strip(), name=host, ports=ports)

    def allows_port(self, port: int) -> bool:
        return not self.ports or port in self.ports

    def matches_name(self, host: str) -> bool:
        if self.name == "*":
            return True
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name

    def covers(self, address: Address) -> bool:
        return self.network is not None and address in self.network


def _ports_of(text: str, entry: str) -> tuple[int, ...]:
    """`:443` is one port, `:*` any port (an empty tuple)."""
    if text == "*":
        return ()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"network entry {entry!r}: the port must be a number from 1 to 65535, or *")
    return (int(text),)


class Refused(Exception):
    """The policy refuses a connection; the message says why and how to allow it."""


@dataclass(frozen=True)
class NetworkPolicy:
    """Which hosts and ports the code may reach; `hosts` maps names to addresses before DNS."""

    rules: tuple[Rule, ...] = ()
    hosts: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, network: bool | Iterable[str], hosts: Mapping[str, str] | None = None) -> NetworkPolicy | None:
        """The policy for a `network=` setting (True is every public host on any port, `["*:*"]`);
        None when there is no network at all."""
        if network is False:
            return None
        entries = ["*:*"] if network is True else network
        return cls(tuple(Rule.parse(e) for e in entries), hosts=dict(hosts or {}))  # type: ignore[union-attr]

    def resolve(self, host: str, port: int) -> list[Address]:
        """The addresses to try for `host:port`; raises Refused when the policy does not allow it."""
        host = host.lower().rstrip(".")
        allow_hint = f"allow it with network=[..., {f'{host}:{port}'!r}]"
        try:
            literal: Address | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            if any(r.covers(literal) and r.allows_port(port) for r in self.rules):
                return [literal]
            anywhere = any(r.name == "*" and r.allows_port(port) for r in self.rules)
            if anywhere and literal.is_global:
                return [literal]
            raise Refused(f"{host}:{port} is not in the sandbox's network allow-list; {allow_hint}")
        named = [r for r in self.rules if r.name and r.matches_name(host)]
        if not named:
            raise Refused(f"{host}:{port} is not in the sandbox's network allow-list; {allow_hint}")
        if not any(r.allows_port(port) for r in named):
            raise Refused(
                f"{host}:{port}: port {port} is not allowed for {host} (allowed: {_ports(named)}); {allow_hint}"
            )
        mapped = self.hosts.get(host)
        try:
            found = [mapped] if mapped else _lookup(host)
        except OSError as exc:
            raise Refused(f"{host} could not be resolved ({exc})") from None
        addresses = [ipaddress.ip_address(a) for a in found]
        usable = [a for a in addresses if a.is_global or any(r.covers(a) for r in self.rules)]
        if not usable:
            kind = _kind(addresses[0]) if addresses else "no"
            raise Refused(
                f"{host}:{port} resolves to {', '.join(map(str, addresses)) or 'nothing'}, a {kind} "
                f"address the sandbox may not reach; list the address in network=[...] to allow it"
            )
        return usable


def _ports(rules: list[Rule]) -> str:
    ports = sorted({p for r in rules for p in r.ports})
    return "any" if any(not r.ports for r in rules) else ", ".join(map(str, ports))


def _kind(address: Address) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    return "non-public"


def _lookup(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Proxy:
    """Serves a session's proxy socket on the host: one thread accepting, one per connection."""

    def __init__(self, listener: socket.socket, policy: NetworkPolicy) -> None:
        self.listener = listener
        self.policy = policy
        self._lock = threading.Lock()
        self._records: list[Connection] = []
        self._open: set[socket.socket] = set()
        self._serving = 0  # connections being served, each on a thread of its own
        self._closed = False
        self._started = time.monotonic()
        threading.Thread(target=self._accept, name="codeact-proxy", daemon=True).start()

    def drain(self) -> list[Connection]:
        """The connections begun since the last drain (bytes as counted so far)."""
        with self._lock:
            records, self._records = self._records, []
        return records

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = [self.listener, *self._open]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    client.close()
                    return
                busy = self._serving >= MAX_CONNECTIONS
                if not busy:
                    self._serving += 1
                    self._open.add(client)
            if busy:  # refused here, on the accepting thread, so the host's threads stay bounded
                with contextlib.suppress(OSError):
                    client.setblocking(False)
                    _reply(
                        client,
                        503,
                        "Too Many Connections",
                        f"codeact proxy: more than {MAX_CONNECTIONS} connections are open; close some first\n",
                    )
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), name="codeact-proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        record: Connection | None = None
        try:
            client.settimeout(_CONNECT_TIMEOUT)
            head, rest = _read_head(client)
            method, target, version, headers = _parse_head(head)
            if method == "CONNECT":
                host, port = _split_host_port(target, 443)
            else:
                host, port, path = _split_url(target)
                authority = host if port == 80 else f"{host}:{port}"
            record = Connection(host=host, port=port, method=method)
            with self._lock:
                self._records.append(record)
            try:
                addresses = self.policy.resolve(host, port)
            except Refused as exc:
                record.allowed, record.refusal = False, str(exc)
                _refuse(client, str(exc))
                return
            upstream = _connect(addresses, port)
            record.allowed, record.address = True, str(upstream.getpeername()[0])
            with self._lock:
                self._open.add(upstream)
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                # the Host header names the host that was checked, whatever the code wrote there
                dropped = (b"proxy-", b"connection:", b"host:")
                kept = [line for line in headers if not line.lower().startswith(dropped)]
                lines = [f"{method} {path} {version}".encode(), f"Host: {authority}".encode(), *kept]
                request = b"\r\n".join([*lines, b"Connection: close", b"", b""])
                upstream.sendall(request + rest)
                record.bytes_sent += len(request) + len(rest)
            _relay(client, upstream, record)
        except _BadRequest as exc:
            with contextlib.suppress(OSError):
                _reply(client, 400, "Bad Request", str(exc))
        except OSError as exc:
            if record is not None and record.allowed is None:
                record.allowed, record.refusal = False, f"connection failed: {exc}"
                with contextlib.suppress(OSError):
                    _reply(
                        client, 502, "Bad Gateway", f"codeact proxy could not reach {record.host}:{record.port}: {exc}"
                    )
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._open.discard(sock)
                    sock.close()
            with self._lock:
                self._serving -= 1


class _BadRequest(Exception):
    pass


def _read_head(client: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _HEAD_LIMIT:
            raise _BadRequest("request head too large")
        chunk = client.recv(4096)
        if not chunk:
            raise _BadRequest("the connection closed before a request arrived")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[str, str, str, list[bytes]]:
    lines = head.split(b"\r\n")
    parts = lines[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest(f"not an HTTP proxy request: {lines[0][:100]!r}")
    return parts[0].upper(), parts[1], parts[2], lines[1:]


def _split_host_port(text: str, default: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if port_text and not port_text.isdigit():
        raise _BadRequest(f"bad port in {text!r}")
    return host.lower(), int(port_text) if port_text else default


def _split_url(url: str) -> tuple[str, int, str]:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "http":
        raise _BadRequest(f"the proxy takes http:// URLs and CONNECT for https, got {url[:100]!r}")
    authority, slash, path = rest.partition("/")
    host, port = _split_host_port(authority.rpartition("@")[2], 80)
    return host, port, slash + path or "/"


def _connect(addresses: list[Address], port: int) -> socket.socket:
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout=_CONNECT_TIMEOUT)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


def _refuse(client: socket.socket, why: str) -> None:
    _reply(client, 403, f"Forbidden by codeact: {why}", f"codeact sandbox: {why}\n")


def _reply(client: socket.socket, status: int, reason: str, body: str) -> None:
    data = body.encode()
    reason = reason.replace("\r", " ").replace("\n", " ")
    client.sendall(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + data
    )


def _relay(client: socket.socket, upstream: socket.socket, record: Connection) -> None:
    client.settimeout(None)
    upstream.settimeout(None)
    peers = {client: upstream, upstream: client}
    while peers:
        try:
            ready, _, _ = select.select(list(peers), [], [], _IDLE_TIMEOUT)
        except (OSError, ValueError):  # the session closed, and with it the proxy's sockets
            return
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            other = peers.get(sock)
            if other is None:
                continue
            if not data:  # half-close: pass the end on, keep the other direction open
                with contextlib.suppress(OSError):
                    other.shutdown(socket.SHUT_WR)
                del peers[sock]
                continue
            if sock is client:  # counted before it is passed on: the step may end as soon as it arrives
                record.bytes_sent += len(data)
            else:
                record.bytes_received += len(data)
            try:
                other.sendall(data)
            except OSError:
                return

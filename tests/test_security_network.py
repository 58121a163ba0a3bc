"""Attacks over the network: only loopback servers this test opens are targeted; none may be reached."""

from __future__ import annotations

import contextlib
import select
import socket
import uuid
from collections.abc import Iterator

import pytest

from attacks import assert_alive, assert_blocked, probe


@contextlib.contextmanager
def tcp_server(family: int = socket.AF_INET, host: str = "127.0.0.1") -> Iterator[socket.socket]:
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, 0))
    server.listen(8)
    server.setblocking(False)
    try:
        yield server
    finally:
        server.close()


def _nothing_arrived(server: socket.socket, wait: float = 0.3) -> bool:
    ready, _, _ = select.select([server], [], [], wait)
    if not ready:
        return True
    with contextlib.suppress(OSError):
        conn, _ = server.accept()
        conn.close()
    return False


def _host_can_connect(family: int, address: object) -> None:
    """Control: the listening socket really is reachable from the host."""
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(2)
        client.connect(address)


def test_tcp_to_a_host_loopback_server_is_refused(make_sandbox, backend):
    with tcp_server() as server:
        port = server.getsockname()[1]
        attack = f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
            s.sendall(b"hello from the sandbox")
            return "connected"
        """
        _host_can_connect(socket.AF_INET, ("127.0.0.1", port))
        assert not _nothing_arrived(server, 2), "control: the host server takes connections"
        if backend == "process":  # network=True reaches public hosts through the proxy, never the host's loopback
            outcome = probe(make_sandbox(network=True), attack)
            assert_blocked(outcome, f"TCP connect to the host's 127.0.0.1:{port} with network=True")
            assert _nothing_arrived(server), "network=True let the sandbox reach the host's loopback"
        sb = make_sandbox()
        outcome = probe(sb, attack)
        assert_blocked(outcome, f"TCP connect to the host's 127.0.0.1:{port}")
        assert _nothing_arrived(server), "the host server received a connection from the sandbox"
    assert_alive(sb)


def test_udp_to_a_host_loopback_socket_is_refused(make_sandbox):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        sb = make_sandbox()
        outcome = probe(
            sb,
            f"""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(5):
                s.sendto(b"datagram from the sandbox", ("127.0.0.1", {port}))
            return "sent"
        """,
        )
        assert_blocked(outcome, f"send UDP to the host's 127.0.0.1:{port}")
        ready, _, _ = select.select([server], [], [], 0.3)
        assert not ready, f"the host's UDP socket received {server.recv(100)!r} from the sandbox"
    assert_alive(sb)


def test_ipv6_loopback_server_is_refused(make_sandbox):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        context = tcp_server(socket.AF_INET6, "::1")
        server = context.__enter__()
    except OSError as exc:
        pytest.skip(f"cannot listen on ::1: {exc}")
    try:
        port = server.getsockname()[1]
        sb = make_sandbox()
        outcome = probe(
            sb,
            f"""
            import socket
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(("::1", {port}))
            return "connected"
        """,
        )
        assert_blocked(outcome, f"TCP connect to the host's [::1]:{port}")
        assert _nothing_arrived(server)
    finally:
        context.__exit__(None, None, None)
    assert_alive(sb)


def test_dns_lookup_fails(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import socket
        return socket.getaddrinfo("pypi.org", 443)
    """,
    )
    assert_blocked(outcome, "resolve pypi.org")
    outcome = probe(
        sb,
        """
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        s.sendto(b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x04pypi\\x03org\\x00\\x00\\x01\\x00\\x01",
                 ("127.0.0.53", 53))
        return s.recv(512)
    """,
    )
    assert_blocked(outcome, "send a raw DNS query to the local resolver")
    assert_alive(sb)


@pytest.mark.parametrize(
    "family, kind, proto",
    [
        ("AF_INET", "SOCK_RAW", 1),  # ICMP
        ("AF_INET", "SOCK_RAW", 255),
        ("AF_PACKET", "SOCK_RAW", 0x0300),
        ("AF_NETLINK", "SOCK_RAW", 0),  # NETLINK_ROUTE: the host's interfaces and routes
        ("AF_NETLINK", "SOCK_DGRAM", 9),  # NETLINK_AUDIT
        ("AF_INET6", "SOCK_DGRAM", 0),
        ("AF_VSOCK", "SOCK_STREAM", 0),  # the hypervisor's socket family
    ],
)
def test_non_unix_sockets_cannot_be_created(make_sandbox, family, kind, proto):
    sb = make_sandbox()
    outcome = probe(
        sb,
        f"""
        import socket
        s = socket.socket(getattr(socket, {family!r}, 40), getattr(socket, {kind!r}), {proto})
        if {family!r} == "AF_NETLINK":
            s.bind((0, 0))
            s.send(bytes.fromhex("1400000012000103000000000000000000000000"))  # RTM_GETLINK dump
            return s.recv(65536)[:64]
        return repr(s)
    """,
    )
    assert_blocked(outcome, f"create a {family}/{kind} socket")
    assert_alive(sb)


def test_abstract_unix_socket_of_the_host_is_unreachable(make_sandbox):
    name = f"\0codeact-attack-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(4)
        server.setblocking(False)
        _host_can_connect(socket.AF_UNIX, name)
        assert not _nothing_arrived(server), "control: the host can reach its own abstract socket"
        sb = make_sandbox()
        outcome = probe(
            sb,
            f"""
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect({name!r})
            s.sendall(b"hello")
            return "connected"
        """,
        )
        assert_blocked(outcome, "connect to an abstract unix socket of the host")
        assert _nothing_arrived(server), "the host's abstract socket received a connection from the sandbox"
    assert_alive(sb)


def test_host_service_socket_inside_a_read_path_cannot_be_connected(make_sandbox, tmp_path):
    # A user grants read access to a directory that also holds a service's socket (a database, an
    # agent, a docker.sock): reading files must not mean talking to the service.
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.txt").write_text("data")
    path = str(shared / "service.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(4)
        server.setblocking(False)
        _host_can_connect(socket.AF_UNIX, path)
        assert not _nothing_arrived(server), "control: the host can reach the service socket"
        sb = make_sandbox(read_paths=[shared])
        assert probe(sb, f"return open({str(shared / 'data.txt')!r}).read()").status == "ok", "control: readable"
        outcome = probe(
            sb,
            f"""
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect({path!r})
            s.sendall(b"DROP TABLE users;")
            return "connected to the host service"
        """,
        )
        assert_blocked(outcome, f"connect to the host service socket {path} in a read path")
        assert _nothing_arrived(server), "the host service received a connection from the sandbox"
    assert_alive(sb)


def test_sandbox_cannot_open_a_tcp_server(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        return s.getsockname()[1]
    """,
    )
    assert_blocked(outcome, "listen on a TCP port")
    assert_alive(sb)


def test_datagrams_to_a_host_socket_inside_a_read_path_are_refused(make_sandbox, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    path = str(shared / "log.sock")  # like /dev/log: a host daemon reading datagrams
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(b"control", path)
        assert server.recv(100) == b"control", "control: the host socket receives datagrams"
        sb = make_sandbox(read_paths=[shared])
        for how in (
            "s.sendto(b'forged log line', path)",
            "s.connect(path); s.send(b'forged log line')",
            "s.sendmsg([b'forged log line'], [], 0, path)",
        ):
            outcome = probe(
                sb,
                f"""
                import socket
                path = {path!r}
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                {how}
                return "sent"
            """,
            )
            assert_blocked(outcome, f"send a datagram to the host socket {path} with {how.split('(')[0]}")
        ready, _, _ = select.select([server], [], [], 0.3)
        assert not ready, f"the host socket received {server.recv(100)!r} from the sandbox"
    assert_alive(sb)


def test_two_sessions_cannot_talk_over_abstract_sockets(make_sandbox):
    name = f"\0codeact-session-{uuid.uuid4().hex}"
    listener = make_sandbox()
    served = listener.execute(f"""
import socket
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    server.bind({name!r})
    server.listen(1)
    server.setblocking(False)
    listening = True
except OSError as exc:
    listening = repr(exc)
listening
""")
    other = make_sandbox()
    outcome = probe(
        other,
        f"""
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect({name!r})
        return "connected to another session"
    """,
    )
    assert_blocked(outcome, "connect to another session's abstract socket")
    if served.value == "True":
        check = listener.execute("try:\n    server.accept()\n    got = True\nexcept OSError:\n    got = False\ngot")
        assert check.value == "False", "the listening session accepted a connection from another session"
    assert_alive(other)

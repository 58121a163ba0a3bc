"""Network by domain on the native backend: the host-side proxy is the only way out.

Everything runs without the internet: names are mapped to HTTP servers this module starts on the
loopback range (`hosts=`), and each attack program that tries to get around the proxy has its own
test and must fail, with evidence on the host that nothing arrived.
"""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from attacks import assert_blocked, probe
from codeact import Sandbox
from codeact.sandbox.network import NetworkPolicy, Refused, Rule

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native sandbox needs Linux")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hits: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"hello from {self.server.server_address[0]} {self.path} host={self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(address: str) -> _Server:
    server = _Server((address, 0), _Handler)
    server.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[tuple[_Server, _Server]]:
    """An allowed server on 127.0.0.1 and a forbidden one on 127.0.0.2."""
    allowed, forbidden = _serve("127.0.0.1"), _serve("127.0.0.2")
    yield allowed, forbidden
    for server in (allowed, forbidden):
        server.shutdown()
        server.server_close()


def _port(server: _Server) -> int:
    return int(server.server_address[1])


@pytest.fixture
def sandbox(servers: tuple[_Server, _Server]) -> Iterator[Sandbox]:
    """api.test is allowed (on the allowed server's port; its address is listed); evil.test is not."""
    allowed = servers[0]
    hosts = {"api.test": "127.0.0.1", "evil.test": "127.0.0.2", "sneaky.test": "127.0.0.2"}
    with Sandbox(
        backend="process", network=[f"api.test:{_port(allowed)}", "sneaky.test:*", "127.0.0.1/32"], hosts=hosts
    ) as sb:
        yield sb


# --- what is allowed works unchanged -------------------------------------------------------------------
def test_urllib_requests_and_httpx_reach_an_allowed_name(sandbox: Sandbox, servers: tuple[_Server, _Server]) -> None:
    port = _port(servers[0])
    result = sandbox.execute(f"""
import urllib.request, requests, httpx
url = "http://api.test:{port}/hi"
[urllib.request.urlopen(url).read().decode(), requests.get(url).text, httpx.get(url).text]
""")
    assert result.error is None, result.error
    assert result.value is not None and result.value.count("hello from 127.0.0.1 /hi") == 3
    assert servers[0].hits == ["/hi"] * 3


def test_each_connection_is_in_the_step_record(sandbox: Sandbox, servers: tuple[_Server, _Server]) -> None:
    port = _port(servers[0])
    result = sandbox.execute(f"""
import urllib.request
ok = urllib.request.urlopen("http://api.test:{port}/a").read()
try:
    urllib.request.urlopen("http://evil.test:{port}/b")
except Exception as exc:
    refused = str(exc)
""")
    assert result.error is None, result.error
    allowed, refused = result.connections
    assert (allowed.host, allowed.port, allowed.allowed, allowed.address) == ("api.test", port, True, "127.0.0.1")
    assert allowed.bytes_sent > 0 and allowed.bytes_received > len(b"hello from 127.0.0.1 /a")
    assert (refused.host, refused.allowed) == ("evil.test", False)
    assert "evil.test" in refused.refusal and "network=[" in refused.refusal
    assert servers[1].hits == []
    assert sandbox.execute("1").connections == []  # each step has its own


def test_a_refusal_names_the_host_and_how_to_allow_it(sandbox: Sandbox, servers: tuple[_Server, _Server]) -> None:
    port = _port(servers[0])
    result = sandbox.execute(f"import urllib.request\nurllib.request.urlopen('http://evil.test:{port}/')")
    assert result.error is not None and result.error.type == "HTTPError"
    assert f"evil.test:{port}" in result.error.message
    assert f"network=[..., 'evil.test:{port}']" in result.error.message


def test_a_run_records_connections_and_the_report_shows_them(servers: tuple[_Server, _Server], tmp_path) -> None:
    from codeact import CodeAct, ScriptedLM
    from codeact.report import render_html

    port = _port(servers[0])
    lm = ScriptedLM(
        [
            f"```python\nimport urllib.request\nbody = urllib.request.urlopen('http://api.test:{port}/r')"
            ".read().decode()\nsubmit(body)\n```"
        ]
    )
    act = CodeAct(
        "question -> answer", lm=lm, sandbox={"network": [f"api.test:{port}"], "hosts": {"api.test": "127.0.0.1"}}
    )
    # api.test resolves to loopback, which this run does not list: the proxy refuses it.
    prediction = act(question="fetch")
    step = prediction.trajectory[0]
    assert [(c.host, c.allowed) for c in step.connections] == [("api.test", False)]
    html = render_html(prediction.record)
    assert "api.test" in html and "refused" in html


# --- attacks that try to get around the proxy ------------------------------------------------------------
def test_attack_direct_ip_connection(sandbox: Sandbox, servers: tuple[_Server, _Server]) -> None:
    port = _port(servers[1])
    outcome = probe(
        sandbox,
        f"""
        import socket
        s = socket.create_connection(("127.0.0.2", {port}), timeout=2)
        s.sendall(b"GET /direct HTTP/1.0\\r\\n\\r\\n")
        return s.recv(100)
    """,
    )
    assert_blocked(outcome, "a direct TCP connection to an IP address")
    assert servers[1].hits == []


def test_attack_other_port_of_an_allowed_name(sandbox: Sandbox, servers: tuple[_Server, _Server]) -> None:
    other = _port(servers[1])
    outcome = probe(
        sandbox,
        f"""
        import urllib.request
        return urllib.request.urlopen("http://api.test:{other}/other-port").read()
    """,
    )
    assert_blocked(outcome, "an allowed name on a port that is not listed")
    assert "port" in outcome.detail
    assert servers[1].hits == []


def test_attack_dns_over_udp(sandbox: Sandbox) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as resolver:
        resolver.bind(("127.0.0.1", 0))
        resolver.settimeout(0.5)
        port = resolver.getsockname()[1]
        outcome = probe(
            sandbox,
            f"""
            import socket
            query = b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x04evil\\x04test\\x00\\x00\\x01\\x00\\x01"
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1)
            for target in (("127.0.0.1", {port}), ("8.8.8.8", 53)):
                s.sendto(query, target)
            return s.recvfrom(512)
        """,
        )
        assert_blocked(outcome, "a DNS query over UDP")
        with pytest.raises(TimeoutError):
            resolver.recvfrom(512)


def test_attack_connect_tunnel_to_a_refused_host(sandbox: Sandbox, servers: tuple[_Server, _Server]) -> None:
    port = _port(servers[1])
    outcome = probe(
        sandbox,
        f"""
        import os, socket
        proxy = os.environ["HTTPS_PROXY"].removeprefix("http://").split(":")
        s = socket.create_connection((proxy[0], int(proxy[1])), timeout=5)
        s.sendall(b"CONNECT 127.0.0.2:{port} HTTP/1.1\\r\\nHost: 127.0.0.2:{port}\\r\\n\\r\\n")
        answer = s.recv(4096)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise ConnectionRefusedError(answer.decode())
        s.sendall(b"GET /tunnel HTTP/1.0\\r\\n\\r\\n")
        return s.recv(4096)
    """,
    )
    assert_blocked(outcome, "a CONNECT tunnel to an address not in the list")
    assert "403" in outcome.detail and "127.0.0.2" in outcome.detail
    assert servers[1].hits == []


def test_attack_allowed_name_resolving_to_an_unlisted_private_address(
    sandbox: Sandbox, servers: tuple[_Server, _Server]
) -> None:
    port = _port(servers[1])  # sneaky.test is allowed on any port, but resolves to 127.0.0.2, not listed
    outcome = probe(
        sandbox,
        f"""
        import urllib.request
        return urllib.request.urlopen("http://sneaky.test:{port}/rebind").read()
    """,
    )
    assert_blocked(outcome, "an allowed name that resolves to a loopback address not in the list")
    assert "loopback" in outcome.detail
    assert servers[1].hits == []


def test_attack_redirect_to_a_refused_host(sandbox: Sandbox, servers: tuple[_Server, _Server]) -> None:
    allowed, forbidden = _port(servers[0]), _port(servers[1])
    outcome = probe(
        sandbox,
        f"""
        import urllib.request
        return urllib.request.urlopen("http://api.test:{allowed}/redirect?to=http://evil.test:{forbidden}/x").read()
    """,
    )
    assert_blocked(outcome, "a redirect from an allowed host to a refused one")
    assert servers[0].hits and servers[1].hits == []


def test_attack_proxy_is_not_an_open_relay_for_metadata(servers: tuple[_Server, _Server]) -> None:
    """network=True reaches public hosts only: not the metadata address, the host's loopback or private ranges."""
    port = _port(servers[0])
    with Sandbox(backend="process", network=True, hosts={"internal.test": "10.0.0.7"}) as sb:
        outcome = probe(
            sb,
            f"""
            import urllib.request
            errors = []
            for url in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:{port}/loop",
                        "http://localhost:{port}/name", "http://internal.test/", "http://[::1]:{port}/v6"):
                try:
                    urllib.request.urlopen(url, timeout=5)
                    return "reached " + url
                except urllib.error.HTTPError as exc:
                    errors.append(exc.code)
            raise PermissionError(errors)
        """,
        )
        assert_blocked(outcome, "network=True reaching non-public addresses")
        assert "[403, 403, 403, 403, 403]" in outcome.detail
    assert servers[0].hits == []


def test_attack_raw_socket(sandbox: Sandbox) -> None:
    outcome = probe(
        sandbox,
        """
        import socket
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    """,
    )
    assert_blocked(outcome, "a raw socket")


def test_attack_listening_inside_the_sandbox(sandbox: Sandbox) -> None:
    outcome = probe(
        sandbox,
        """
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 8080))
        s.listen()
        return s.getsockname()
    """,
    )
    assert_blocked(outcome, "binding a TCP port")


def test_attack_a_forged_host_header_is_replaced(sandbox: Sandbox, servers: tuple[_Server, _Server]) -> None:
    port = _port(servers[0])
    result = sandbox.execute(f"""
import urllib.request
request = urllib.request.Request("http://api.test:{port}/vhost", headers={{"Host": "internal.admin"}})
urllib.request.urlopen(request).read().decode()
""")
    assert result.error is None, result.error
    assert f"host=api.test:{port}" in (result.value or "") and "internal.admin" not in (result.value or "")


def test_attack_a_connection_flood_is_capped_and_the_host_keeps_its_threads(
    sandbox: Sandbox, servers: tuple[_Server, _Server]
) -> None:
    from codeact.sandbox.network import MAX_CONNECTIONS

    before = threading.active_count()
    result = sandbox.execute(f"""
import os, socket
proxy = os.environ["HTTP_PROXY"].removeprefix("http://").split(":")
held, refused = [], 0
for _ in range({MAX_CONNECTIONS + 40}):
    s = socket.create_connection((proxy[0], int(proxy[1])), timeout=5)
    held.append(s)
for s in held[{MAX_CONNECTIONS}:]:
    s.settimeout(5)
    if s.recv(100).startswith(b"HTTP/1.1 503"):
        refused += 1
refused
""")
    assert result.error is None, result.error
    assert int(result.value or 0) >= 30  # past the cap each connection is turned away at once
    assert threading.active_count() - before <= MAX_CONNECTIONS + 2
    port = _port(servers[0])
    sandbox.execute("for s in held:\n    s.close()\ndel held, s")  # gone once this step commits
    after = sandbox.execute(f"""
import time, urllib.request, urllib.error
for attempt in range(50):  # the proxy sees the closes as they arrive
    try:
        status = urllib.request.urlopen("http://api.test:{port}/after").status
        break
    except urllib.error.HTTPError as exc:
        assert exc.code == 503, exc
        time.sleep(0.1)
status
""")
    assert after.value == "200", after.error


# --- the allow-list ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["http://api.example.com", "api.example.com:99999", "bad host", "", "a..b"])
def test_a_malformed_entry_is_refused_with_what_to_write(entry: str) -> None:
    with pytest.raises(ValueError, match="network entr"):
        Sandbox(backend="process", network=[entry])


def test_a_string_is_not_taken_for_a_list() -> None:
    with pytest.raises(TypeError, match="list of hosts"):
        Sandbox(backend="process", network="api.example.com")


def test_wildcards_ports_and_ranges() -> None:
    policy = NetworkPolicy.of(
        ["*.github.com:443", "10.0.0.0/8", "example.org"],
        hosts={"api.github.com": "140.82.112.5", "github.com": "140.82.112.4", "example.org": "93.184.215.14"},
    )
    assert policy is not None
    assert [str(a) for a in policy.resolve("api.github.com", 443)] == ["140.82.112.5"]
    for host, port in [("github.com", 443), ("api.github.com", 80), ("example.org", 8080), ("10.1.2.3", 22)]:
        with pytest.raises(Refused):
            policy.resolve(host, port)
    assert [str(a) for a in policy.resolve("10.1.2.3", 443)] == ["10.1.2.3"]
    assert [str(a) for a in policy.resolve("example.org", 80)] == ["93.184.215.14"]
    assert Rule.parse("[::1]:8080").ports == (8080,)


def test_a_star_entry_opens_public_hosts_and_listed_ranges_only() -> None:
    policy = NetworkPolicy.of(
        ["*", "10.0.0.5"],
        hosts={"api.example.com": "93.184.215.14", "db.internal": "10.0.0.5", "other.internal": "10.0.0.6"},
    )
    assert policy is not None
    assert [str(a) for a in policy.resolve("api.example.com", 443)] == ["93.184.215.14"]
    assert [str(a) for a in policy.resolve("db.internal", 443)] == ["10.0.0.5"]
    assert [str(a) for a in policy.resolve("93.184.215.14", 80)] == ["93.184.215.14"]
    for host, port in [("other.internal", 443), ("169.254.169.254", 80), ("api.example.com", 22)]:
        with pytest.raises(Refused):
            policy.resolve(host, port)

"""The TLS probe against real TLS servers on 127.0.0.1, with certificates made in the test: the
notAfter of one that verifies, and one line naming the host for every one that does not."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sandbox_env import free_port_block
from tls_servers import Authority, TlsServer, self_signed

from releasegate.errors import ProbeError
from releasegate.probes.tls import peer_certificate


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority()


@pytest.fixture
def ca_file(authority: Authority, tmp_path: Path) -> str:
    return str(authority.write(tmp_path))


@pytest.fixture
def serve() -> Iterator:
    servers: list[TlsServer] = []

    def start(issued) -> TlsServer:
        servers.append(TlsServer(issued))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def refusal(host: str, port: int, **kw: object) -> str:
    with pytest.raises(ProbeError) as error:
        peer_certificate(host, port, timeout_s=2, **kw)  # type: ignore[arg-type]
    return str(error.value)


def test_a_trusted_certificate_is_read_by_name_and_by_address(authority, ca_file, serve):
    issued = authority.issue(valid_for=timedelta(days=90))
    server = serve(issued)

    by_name = peer_certificate("localhost", server.port, ca_file=ca_file)
    by_address = peer_certificate("127.0.0.1", server.port, ca_file=ca_file)

    assert by_name.not_after == by_address.not_after == issued.not_after
    assert by_name.about == "CN=localhost, issued by CN=releasegate test CA"


def test_a_certificate_that_does_not_verify_names_the_host_and_why(authority, ca_file, serve):
    ran_out = authority.issue(valid_for=timedelta(days=-1))
    expired = serve(ran_out)
    untrusted = serve(self_signed(valid_for=timedelta(days=90)))
    fine = serve(authority.issue(valid_for=timedelta(days=90)))

    assert refusal("localhost", expired.port, ca_file=ca_file) == (
        f"TLS localhost:{expired.port}: certificate does not verify: certificate has expired "
        f"on {ran_out.not_after:%Y-%m-%d %H:%M} UTC (renew it, or trust its issuer with [readiness.tls] ca_file)"
    )
    assert f"TLS localhost:{untrusted.port}: certificate does not verify: self-signed certificate" in refusal(
        "localhost", untrusted.port, ca_file=ca_file
    )
    assert "certificate does not verify: unable to get local issuer certificate" in refusal(
        "localhost", fine.port
    ), "the system's trust store does not know the test's CA"


def test_no_listener_no_answer_and_an_unreadable_ca_file_are_one_line_each(ca_file):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, never says a word
        quiet = silent.getsockname()[1]
        with pytest.raises(ProbeError) as error:
            peer_certificate("127.0.0.1", quiet, ca_file=ca_file, timeout_s=0.3)
    assert str(error.value) == f"TLS 127.0.0.1:{quiet}: no answer within 0.3 s"
    port = free_port_block(1)
    assert refusal("127.0.0.1", port, ca_file=ca_file) == (
        f"TLS 127.0.0.1:{port}: connection refused (is the host right, and does it listen there?)"
    )
    assert refusal("127.0.0.1", port, ca_file="/nonexistent/ca.pem").startswith(
        f"TLS 127.0.0.1:{port}: cannot read the CA file /nonexistent/ca.pem"
    )

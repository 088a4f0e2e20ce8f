"""A host's TLS certificate, as a client sees it: verified against the trust store (or a CA
file), with the host name checked, and its notAfter.

A certificate that does not verify (expired, self-signed, another host's, an unknown issuer),
a refused connection, a name that does not resolve, a port that does not speak TLS: each is a
ProbeError naming the host, never a certificate with days left.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from releasegate.errors import ProbeError


@dataclass(frozen=True)
class PeerCertificate:
    host: str
    port: int
    not_after: datetime
    subject: str
    issuer: str

    @property
    def about(self) -> str:
        return f"{self.subject}, issued by {self.issuer}"


def peer_certificate(
    host: str, port: int, *, ca_file: str | None = None, timeout_s: float = 5.0
) -> PeerCertificate:
    """Connect, complete a verified handshake, and read the certificate the host presents."""
    component = f"TLS {host}:{port}"
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(
            component, f"cannot read the CA file {ca_file}: {exc}", "check [readiness.tls] ca_file"
        ) from None
    try:
        cert = _handshake(context, host, port, timeout_s)
    except ssl.SSLCertVerificationError as exc:
        when = _expired_on(host, port, timeout_s) if exc.verify_code == X509_V_ERR_CERT_HAS_EXPIRED else ""
        raise ProbeError(
            component,
            f"certificate does not verify: {exc.verify_message}{when}",
            "renew it, or trust its issuer with [readiness.tls] ca_file",
        ) from None
    except TimeoutError:
        raise ProbeError(component, f"no answer within {timeout_s:g} s") from None
    except socket.gaierror as exc:
        raise ProbeError(component, f"name does not resolve: {exc.strerror}") from None
    except ConnectionRefusedError:
        raise ProbeError(
            component, "connection refused", "is the host right, and does it listen there?"
        ) from None
    except ssl.SSLError as exc:
        raise ProbeError(
            component, f"no TLS handshake: {exc.reason or exc}", "does this port speak TLS?"
        ) from None
    except OSError as exc:
        raise ProbeError(component, f"cannot connect: {exc.strerror or exc}") from None
    if not cert or "notAfter" not in cert:
        raise ProbeError(component, "the host presented no certificate")
    return PeerCertificate(
        host,
        port,
        datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), UTC),
        _name(cert.get("subject")),
        _name(cert.get("issuer")),
    )


def _handshake(
    context: ssl.SSLContext, host: str, port: int, timeout_s: float, *, binary: bool = False
) -> Any:
    """The certificate ``host`` presents in a TLS handshake under ``context`` (DER with ``binary``)."""
    with (
        socket.create_connection((host, port), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.getpeercert(binary_form=binary)


X509_V_ERR_CERT_HAS_EXPIRED = 10
"""OpenSSL's verify code for a certificate past its notAfter."""


def _expired_on(host: str, port: int, timeout_s: float) -> str:
    """`` on 2026-11-01 12:00 UTC``: when an expired certificate ran out, read from it again
    without verifying (a verified handshake refuses to show it); empty when that fails too."""
    from cryptography import x509  # only here: every gate run imports this module

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        der = _handshake(context, host, port, timeout_s, binary=True)
        not_after = x509.load_der_x509_certificate(der).not_valid_after_utc if der else None
    except (OSError, ValueError):
        return ""
    return f" on {not_after:%Y-%m-%d %H:%M} UTC" if not_after else ""


def _name(parts: Any) -> str:
    """``((('commonName', 'api.internal'),),)`` -> ``CN=api.internal``."""
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C"}
    fields = [f"{short.get(key, key)}={value}" for rdn in parts or () for key, value in rdn if key in short]
    return ", ".join(fields) or "no name"

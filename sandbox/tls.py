"""Certificates for the sandbox's TLS listener (and for the tests' TLS servers): a CA of its own
and the certificates it signs for localhost and 127.0.0.1, so that ``readiness.tls`` has a
real certificate to verify, trusting only that CA (``ca_file``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SANDBOX_DAYS = 90


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    not_after: datetime

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """``name.pem`` and ``name.key`` (readable by the owner only)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return cert, key


class Authority:
    """A CA; ``issue`` signs a certificate for localhost and 127.0.0.1."""

    def __init__(self, name: str = "releasegate test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=365))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(*[False] * 5, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "ca.pem"
        path.write_bytes(self.pem)
        return path

    def issue(self, *, valid_for: timedelta, started: timedelta = timedelta(days=30)) -> Issued:
        """Valid from ``started`` ago until ``valid_for`` from now (negative: expired already)."""
        return _certificate(self.key, self.cert.subject, valid_for=valid_for, started=started)


def self_signed(*, valid_for: timedelta) -> Issued:
    """A certificate that signs itself: valid dates, but nobody trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _certificate(key, None, valid_for=valid_for, started=timedelta(days=1), own_key=key)


def sandbox_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """``directory``/ca.pem, server.pem, server.key: made when missing, valid SANDBOX_DAYS."""
    ca_file, cert, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    if not (ca_file.exists() and cert.exists() and key.exists()):
        authority = Authority("releasegate sandbox CA")
        authority.issue(valid_for=timedelta(days=SANDBOX_DAYS), started=timedelta(days=1)).write(
            directory, "server"
        )
        authority.write(directory)
    return ca_file, cert, key


def _certificate(
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    *,
    valid_for: timedelta,
    started: timedelta,
    own_key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    key = own_key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    not_after = now + valid_for
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - started)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        # Python 3.13's strict verification wants both key identifiers
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return Issued(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        not_after.replace(microsecond=0),
    )

"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler from the tools cache (``make k8s-tools``), each a process of its own.

Everything lives in one directory: the certificates (a CA, the API server's serving certificate,
an admin client certificate in ``system:masters``, the service-account key pair, and the
aggregation layer's front-proxy CA with the client certificate the API server shows to an
extension API server such as metrics-server), the data of
etcd, each component's log and pid file, and ``kubeconfig``, which ``kubectl``, ``helm``, the
node agent and releasegate use. The processes run in sessions of their own, so they outlive the
process that started them (``python -m sandbox up --kubernetes`` returns); ``stop`` finds them
again by their pid files.

Service ClusterIPs are drawn from a loopback range (a /24 of 127.96.0.0/11 picked at random
when the directory is made, so that control planes of tests running side by side do not share
addresses): the sandbox's service proxy (sandbox.service_proxy) listens on each Service's
ClusterIP and port, so a Service is reached at the address the API gave it, as in a cluster.
The pods' addresses are the same /24 in 100.96.0.0/11 (``pod_cidr``; another one drawn at random
when the Services' range is fixed, FIXED_SERVICE_CIDR): the endpoint controller
refuses loopback addresses in EndpointSlices, so a pod's address in the API is 100.B.C.D and
its process listens on 127.B.C.D (``listen_address``), where the node agent's probes and the
service proxy reach it.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from releasegate.platforms.base import Progress
from sandbox.common import ComponentStatus, SandboxError, await_ready, pid_from_file, spawn, stop_pid

SERVICE_RANGE = ipaddress.ip_network("127.96.0.0/11")
"""Loopback, so a ClusterIP is an address this machine can listen on."""
POD_RANGE = ipaddress.ip_network("100.96.0.0/11")
"""Pod addresses as the API shows them; the processes listen on their loopback twins."""
FIXED_SERVICE_CIDR = "127.127.255.0/24"
"""The last /24 of SERVICE_RANGE, never drawn at random: for a sandbox whose environment files
name a Service's ClusterIP (in its lowest 16 addresses, the band Kubernetes keeps for addresses
asked for by name, so no Service given one at random can hold it first)."""


def listen_address(pod_ip: str) -> str:
    """Where the process of the pod at ``pod_ip`` (100.B.C.D) listens: 127.B.C.D."""
    address = ipaddress.ip_address(pod_ip)
    if address not in POD_RANGE:
        raise ValueError(f"{pod_ip} is not a sandbox pod address ({POD_RANGE})")
    return "127." + pod_ip.split(".", 1)[1]


REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "tools" / "k8s" / "build.sh"
START_TIMEOUT_S = 90.0
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


@functools.cache
def tool(name: str) -> Path:
    """The binary ``make k8s-tools`` built for this checkout's pinned version of ``name``
    (asked of build.sh once per process: it runs ``go list`` to learn the pinned version)."""
    try:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-dir", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxError(
            f"{name}: cannot locate it in the tools cache ({exc}): run make k8s-tools"
        ) from None
    path = Path(out) / name
    if not os.access(path, os.X_OK) or not (Path(out) / ".built").exists():
        raise SandboxError(f"{name}: not built at {path}: run make k8s-tools (once; then cached)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Pki:
    ca: Path
    ca_key: Path
    server: tuple[Path, Path]
    admin: tuple[Path, Path]
    sa: tuple[Path, Path]
    front_proxy_ca: Path
    front_proxy: tuple[Path, Path]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_secret(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)


def _sign(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


FRONT_PROXY_CLIENT = "front-proxy-client"
"""The common name of the API server's front-proxy client certificate: the one name an extension
API server accepts X-Remote-User headers from (--requestheader-allowed-names)."""


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(*[False] * 5, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca


def _make_front_proxy(paths: _Pki) -> None:
    """The aggregation layer's own CA and the client certificate the API server proxies with: a
    CA of its own, as kubeadm makes it, so that no client certificate of the cluster's CA can
    pass itself off as the API server to an extension API server."""
    ca_key, ca = _make_ca("releasegate sandbox front-proxy CA")
    cert, key = _sign(
        ca_key,
        ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FRONT_PROXY_CLIENT)]),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
    )
    paths.front_proxy[0].write_bytes(cert)
    _write_secret(paths.front_proxy[1], key)
    paths.front_proxy_ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))  # last: the "made" mark


def make_pki(directory: Path, first_service_ip: str = "127.96.0.1") -> _Pki:
    """The certificates the components need, made once per directory (EC keys: fast to make);
    a directory made before the aggregation layer gets its front-proxy certificates added."""
    pki = directory / "pki"
    paths = _Pki(
        pki / "ca.crt",
        pki / "ca.key",
        (pki / "apiserver.crt", pki / "apiserver.key"),
        (pki / "admin.crt", pki / "admin.key"),
        (pki / "sa.pub", pki / "sa.key"),
        pki / "front-proxy-ca.crt",
        (pki / "front-proxy-client.crt", pki / "front-proxy-client.key"),
    )
    if paths.sa[1].exists():
        if not paths.front_proxy_ca.exists():
            _make_front_proxy(paths)
        return paths
    pki.mkdir(parents=True, exist_ok=True)
    _make_front_proxy(paths)
    ca_key, ca = _make_ca("releasegate sandbox kubernetes CA")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_secret(paths.ca_key, _pem_key(ca_key))
    cert, key = _sign(
        ca_key,
        ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.IPAddress(IPv4Address("127.0.0.1")),
            x509.IPAddress(IPv4Address(first_service_ip)),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    paths.server[0].write_bytes(cert)
    _write_secret(paths.server[1], key)
    cert, key = _sign(
        ca_key,
        ca,
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "releasegate-sandbox-admin"),
            ]
        ),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
    )
    paths.admin[0].write_bytes(cert)
    _write_secret(paths.admin[1], key)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    paths.sa[0].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    _write_secret(paths.sa[1], _pem_key(sa_key))
    return paths


class ControlPlane:
    """The four components in ``directory`` (see the module docstring); ``start`` is a no-op when up."""

    def __init__(self, directory: Path, service_cidr: str | None = None) -> None:
        self.dir = directory
        self.fixed_cidr = service_cidr
        """A /24 of SERVICE_RANGE given by the caller (a sandbox whose files name a Service's
        address: FIXED_SERVICE_CIDR), instead of one drawn at random."""
        self.kubeconfig = directory / "kubeconfig"
        self._ports_file = directory / "ports.json"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- what a caller reads ---------------------------------------------------------------------

    @property
    def ports(self) -> dict[str, Any]:
        try:
            return json.loads(self._ports_file.read_text())
        except (OSError, ValueError):
            return {}

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.ports.get('apiserver', 0)}"

    @property
    def service_cidr(self) -> str:
        return str(self.ports.get("service_cidr", ""))

    @property
    def pod_cidr(self) -> str:
        return str(self.ports.get("pod_cidr", ""))

    @property
    def pki(self) -> _Pki:
        return make_pki(self.dir, str(ipaddress.ip_network(self.service_cidr)[1]))

    def status(self) -> list[ComponentStatus]:
        ports = self.ports
        rows = []
        for name, port_key in zip(COMPONENTS, ("etcd_client", "apiserver", "kcm", "scheduler"), strict=True):
            pid = pid_from_file(self.dir / f"{name}.pid", name)
            rows.append(ComponentStatus(name, pid is not None, f"127.0.0.1:{ports.get(port_key, '-')}", pid))
        return rows

    def is_up(self) -> bool:
        return all(row.up for row in self.status())

    # -- start and stop ----------------------------------------------------------------------------

    def start(self, progress: Progress = print) -> str:
        if self.is_up():
            return "already up"
        self.stop(lambda _line: None)  # whatever is left of a half-started one
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        binaries = {name: tool(name) for name in COMPONENTS}
        ports: dict[str, Any] = {
            k: free_port() for k in ("etcd_client", "etcd_peer", "apiserver", "kcm", "scheduler")
        }
        before = self.ports  # a restart keeps its ranges: etcd holds addresses drawn from them
        block = pod_block = random.randrange(0, SERVICE_RANGE.num_addresses // 256 - 1)  # never the last
        if self.fixed_cidr is not None:
            network = ipaddress.ip_network(self.fixed_cidr)
            if network.prefixlen != 24 or not network.subnet_of(SERVICE_RANGE):  # type: ignore[arg-type]
                raise SandboxError(f"service CIDR {self.fixed_cidr}: a /24 of {SERVICE_RANGE} is needed")
            # The Services' addresses are fixed, the pods' are not: control planes that share the
            # fixed range (the examples' stacks, side by side) must not give two pods one address.
            block = (int(network.network_address) - int(SERVICE_RANGE.network_address)) // 256
        ports["service_cidr"] = before.get(
            "service_cidr", f"{SERVICE_RANGE.network_address + 256 * block}/24"
        )
        ports["pod_cidr"] = before.get("pod_cidr", f"{POD_RANGE.network_address + 256 * pod_block}/24")
        pki = make_pki(self.dir, str(ipaddress.ip_network(ports["service_cidr"])[1]))
        self._ports_file.write_text(json.dumps(ports))
        self._write_kubeconfig(pki, ports["apiserver"])
        etcd_url, peer_url = (
            f"http://127.0.0.1:{ports['etcd_client']}",
            f"http://127.0.0.1:{ports['etcd_peer']}",
        )
        self._spawn(
            "etcd",
            binaries["etcd"],
            ["--name", "default", "--data-dir", str(self.dir / "etcd"),
             "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"default={peer_url}", "--log-level", "warn",
             "--unsafe-no-fsync"],  # a sandbox: its data may be lost on a power cut, not its speed
        )  # fmt: skip
        self._wait("etcd", lambda: _http_ok(f"{etcd_url}/health"))
        self._spawn(
            "kube-apiserver",
            binaries["kube-apiserver"],
            ["--etcd-servers", etcd_url, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
             "--secure-port", str(ports["apiserver"]), "--cert-dir", str(self.dir / "pki"),
             "--tls-cert-file", str(pki.server[0]), "--tls-private-key-file", str(pki.server[1]),
             "--client-ca-file", str(pki.ca),
             "--kubelet-client-certificate", str(pki.admin[0]), "--kubelet-client-key", str(pki.admin[1]),
             "--kubelet-preferred-address-types", "InternalIP",
             "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
             "--service-account-key-file", str(pki.sa[0]), "--service-account-signing-key-file", str(pki.sa[1]),
             "--service-cluster-ip-range", ports["service_cidr"], "--endpoint-reconciler-type", "none",
             # the aggregation layer (metrics.k8s.io from metrics-server, see sandbox.cluster): the API
             # server proxies to an APIService's Service with the front-proxy client certificate and
             # says who asked in these headers; without --enable-aggregator-routing it dials the
             # Service's ClusterIP, which the node agent's service proxy serves
             "--requestheader-client-ca-file", str(pki.front_proxy_ca),
             "--requestheader-allowed-names", FRONT_PROXY_CLIENT,
             "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
             "--requestheader-group-headers", "X-Remote-Group",
             "--requestheader-username-headers", "X-Remote-User",
             "--proxy-client-cert-file", str(pki.front_proxy[0]),
             "--proxy-client-key-file", str(pki.front_proxy[1]),
             "--authorization-mode", "RBAC", "--v", "1"],
        )  # fmt: skip
        self._wait("kube-apiserver", lambda: self._api_ok("/readyz"))
        common = ["--kubeconfig", str(self.kubeconfig), "--authentication-kubeconfig", str(self.kubeconfig),
                  "--authorization-kubeconfig", str(self.kubeconfig), "--bind-address", "127.0.0.1",
                  "--leader-elect=false", "--v", "1"]  # fmt: skip
        self._spawn(
            "kube-controller-manager",
            binaries["kube-controller-manager"],
            [*common, "--secure-port", str(ports["kcm"]),
             "--service-account-private-key-file", str(pki.sa[1]), "--root-ca-file", str(pki.ca),
             "--use-service-account-credentials", "--controllers", "*",
             # a node that stops renewing its lease is NotReady after 20 s, not 50
             "--node-monitor-grace-period", "20s"],
        )  # fmt: skip
        self._spawn(
            "kube-scheduler", binaries["kube-scheduler"], [*common, "--secure-port", str(ports["scheduler"])]
        )
        self._wait("kube-controller-manager", lambda: _https_ok(f"https://127.0.0.1:{ports['kcm']}/healthz"))
        self._wait("kube-scheduler", lambda: _https_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz"))
        self._wait(
            "the default ServiceAccount (kube-controller-manager)",
            lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
            "kube-controller-manager",
        )
        return f"{self.url} in {time.monotonic() - started:.1f} s (kubeconfig {self.kubeconfig})"

    def stop(self, progress: Progress = print) -> str:
        """Newest first: an API server whose etcd is gone hangs in its shutdown."""
        stopped = []
        for name in reversed(COMPONENTS):
            pid = pid_from_file(self.dir / f"{name}.pid", name)
            if pid is not None:
                stop_pid(pid, name, signal.SIGTERM, 20.0)
                stopped.append(name)
            (self.dir / f"{name}.pid").unlink(missing_ok=True)
        return f"stopped {', '.join(stopped)}" if stopped else "not running"

    # -- helpers -----------------------------------------------------------------------------------

    def _spawn(self, name: str, binary: Path, args: list[str]) -> None:
        self._procs[name] = spawn([str(binary), *args], self.dir / f"{name}.log")

    def _wait(self, name: str, ready: Callable[[], bool], component: str | None = None) -> None:
        """``component`` (default: ``name``) is the process whose exit or log explains a failure."""
        component = component or name
        await_ready(name, self._procs[component], ready, START_TIMEOUT_S, self.dir / f"{component}.log")

    def _write_kubeconfig(self, pki: _Pki, port: int) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sandbox",
                    "cluster": {"server": f"https://127.0.0.1:{port}", "certificate-authority": str(pki.ca)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {"client-certificate": str(pki.admin[0]), "client-key": str(pki.admin[1])},
                }
            ],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "admin"}}],
            "current-context": "sandbox",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")

    def ssl_context(self) -> ssl.SSLContext:
        pki = self.pki
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(str(pki.admin[0]), str(pki.admin[1]))
        return context

    def _api_ok(self, path: str) -> bool:
        return _https_ok(f"{self.url}{path}", self.ssl_context())


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _https_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0, verify=context or False).status_code == 200
    except httpx.HTTPError:
        return False

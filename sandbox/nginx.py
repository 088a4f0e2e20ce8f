"""nginx for the sandbox: the load balancer in front of the demo service's instances.

Its ``upstream`` block includes the file the local platform rewrites on every rollout step;
``proxy_next_upstream error timeout`` retries only connection failures, never a 5xx, so a bad
release shows its errors instead of having them hidden.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
from pathlib import Path
from urllib.parse import urlsplit

from releasegate.config import LocalPlatformSettings
from releasegate.platforms.local import write_upstream_file
from sandbox.common import (
    ComponentStatus,
    SandboxError,
    accepts,
    pid_from_file,
    run,
    stop_pid,
    tail_file,
    wait_for,
)
from sandbox.tls import sandbox_certificate

CONF = """\
# Written by `python -m sandbox up`: nginx for the sandbox at {address}.
{user}worker_processes 1;
pid {pid_file};
error_log {prefix}/logs/error.log warn;

events {{
    worker_connections 512;
}}

http {{
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path       {prefix}/temp/proxy;
    fastcgi_temp_path     {prefix}/temp/fastcgi;
    uwsgi_temp_path       {prefix}/temp/uwsgi;
    scgi_temp_path        {prefix}/temp/scgi;

    log_format releasegate '$time_iso8601 "$request" status=$status upstream=$upstream_addr '
                           'upstream_status=$upstream_status request_time=$request_time';
    access_log {prefix}/logs/access.log releasegate;

    # No client keep-alive: a reload closes the old workers' idle keep-alive connections, and a
    # client that sends on one at that instant sees a disconnect the rollout would be blamed for.
    keepalive_timeout 0;

    upstream demo_backend {{
        include {upstream_file};
    }}

{tls_server}
    server {{
        listen {address};

        location / {{
            proxy_pass http://demo_backend;
            # Retry another instance only when one cannot be reached; never on a 5xx.
            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


TLS_SERVER = """\
    # The same service over TLS, with the sandbox's own certificate ({cert}), so that
    # [readiness.tls] has a real certificate to check (trusting the sandbox's CA).
    server {{
        listen {address} ssl;
        ssl_certificate     {cert};
        ssl_certificate_key {key};

        location / {{
            proxy_pass http://demo_backend;
            proxy_next_upstream error timeout;
            proxy_set_header Host $host;
        }}
    }}
"""


class Nginx:
    name = "nginx"

    def __init__(
        self, sandbox_dir: Path, url: str, local: LocalPlatformSettings, tls_port: int | None = None
    ) -> None:
        self.port = urlsplit(url).port or 80
        self.tls_port = tls_port
        self.prefix = sandbox_dir / "nginx"
        self.conf = self.prefix / "nginx.conf"
        self.error_log = self.prefix / "logs" / "error.log"
        self.pid_file = Path(local.nginx_pid_file)
        self.upstream_file = Path(local.nginx_upstream_file)
        self.placeholder_port = local.ports[0]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        return pid_from_file(self.pid_file, "nginx")

    def start(self) -> str:
        for sub in ("logs", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.upstream_file.exists():  # no instance yet: nginx needs one server line to start
            write_upstream_file(self.upstream_file, [], self.placeholder_port)
        self.conf.write_text(
            CONF.format(
                address=self.address,
                prefix=self.prefix,
                pid_file=self.pid_file,
                upstream_file=self.upstream_file,
                user=_user_line(),
                tls_server=self._tls_server(),
            )
        )
        try:
            run(
                [_nginx_binary(), "-e", str(self.error_log), "-p", str(self.prefix), "-c", str(self.conf)],
                "nginx",
            )
        except SandboxError as exc:
            raise SandboxError(f"nginx did not start on {self.address}: {exc}") from None
        if not wait_for(lambda: self.pid() is not None and accepts(self.port), 5.0):
            raise SandboxError(f"nginx did not listen on {self.address}: {tail_file(self.error_log)}")
        return f"started on {self.address} (pid {self.pid()})"

    def _tls_server(self) -> str:
        if self.tls_port is None:
            return ""
        _ca, cert, key = sandbox_certificate(self.prefix / "tls")  # read by the master, as its owner
        return TLS_SERVER.format(address=f"127.0.0.1:{self.tls_port}", cert=cert, key=key)

    def stop(self) -> str:
        pid = self.pid()
        if pid is None:
            return "not running"
        stop_pid(pid, "nginx", signal.SIGQUIT, 10.0)  # graceful: workers finish their requests
        return "stopped"

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is None:
            return ComponentStatus(self.name, False, self.address, None, "not running")
        if not accepts(self.port):
            return ComponentStatus(self.name, False, self.address, pid, "running but not listening")
        return ComponentStatus(self.name, True, self.address, pid)


def _nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise SandboxError("nginx is not installed: run `make setup` (it installs nginx-light)")
    return found


def _user_line() -> str:
    """As root, workers run as nobody (with its own group: Debian has no group "nobody")."""
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    return f"user {nobody.pw_name} {grp.getgrgid(nobody.pw_gid).gr_name};\n"

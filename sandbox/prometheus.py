"""Prometheus for the sandbox: scrapes every demo instance each second, on 127.0.0.1 only.

Targets come from the file the local platform rewrites whenever an instance starts or stops
(``platform.local.targets_file``, Prometheus file-based service discovery), each labelled with
its ``release`` and ``instance``; the job is the environment's service name, so the queries'
``{service}`` matches it. Storage lives in ``<sandbox>/prometheus``. Prometheus picks up a
changed targets file on its ~5 s discovery cycle, so a new instance's first sample arrives a
few seconds after it starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from releasegate.config import MetricsSettings
from sandbox.common import ComponentStatus, SandboxError, pid_from_file, stop_pid, tail_file, wait_for

CONFIG = """\
# Written by `python -m sandbox up`: Prometheus for the sandbox at {address}.
global:
  scrape_interval: {interval}
  scrape_timeout: {timeout}
  evaluation_interval: {interval}

rule_files: [{rules}]

scrape_configs:
  - job_name: {job}
    metrics_path: /metrics
    file_sd_configs:
      - files: [{targets}]
        refresh_interval: 5s
"""


RULES = """\
# Written by `python -m sandbox up`: the alerts a team would have, scaled to the sandbox's seconds.
groups:
  - name: releasegate-sandbox
    rules:
      - alert: DemoInstanceDown
        expr: up{{job={job}}} == 0
        for: 10s
        labels: {{severity: critical}}
        annotations: {{summary: "an instance of the demo service does not answer its scrape"}}
      - alert: DemoHighErrorRate
        expr: sum(rate(http_requests_total{{job={job},status=~"5.."}}[1m])) / sum(rate(http_requests_total{{job={job}}}[1m])) > 0.05
        for: 1m
        labels: {{severity: warning}}
        annotations: {{summary: "more than 5 % of requests fail"}}
"""


class Prometheus:
    name = "prometheus"

    def __init__(self, sandbox_dir: Path, metrics: MetricsSettings, targets_file: str, job: str) -> None:
        parts = urlsplit(metrics.prometheus_url)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise SandboxError(
                f"metrics.prometheus_url {metrics.prometheus_url}: the sandbox's Prometheus "
                "listens on 127.0.0.1 only"
            )
        self.port = parts.port or 9090
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = sandbox_dir / "prometheus"
        self.config = self.dir / "prometheus.yml"
        self.rules = self.dir / "rules.yml"
        self.data = self.dir / "data"
        self.log = self.dir / "prometheus.log"
        self.pid_file = self.dir / "prometheus.pid"
        self.targets_file = Path(targets_file)
        self.job = job
        self.interval_s = metrics.scrape_interval_s

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        return pid_from_file(self.pid_file, "prometheus")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> str:
        self.data.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():  # nothing deployed yet: an empty target list, watched
            self.targets_file.parent.mkdir(parents=True, exist_ok=True)
            self.targets_file.write_text("[]\n", encoding="utf-8")
        interval = f"{self.interval_s:g}s"
        self.rules.write_text(RULES.format(job=json.dumps(self.job)))
        self.config.write_text(
            CONFIG.format(
                address=self.address,
                interval=interval,
                timeout=interval,
                job=json.dumps(self.job),
                targets=json.dumps(str(self.targets_file)),
                rules=json.dumps(str(self.rules)),
            )
        )
        argv = [
            prometheus_tool(),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.data}",
            f"--web.listen-address={self.address}",
            "--storage.tsdb.retention.time=15d",  # history laid out days back (sandbox.history)
            "--log.level=warn",
        ]
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        if (
            not wait_for(lambda: proc.poll() is not None or self.ready(), 15.0, 0.1)
            or proc.poll() is not None
        ):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            raise SandboxError(f"Prometheus did not become ready on {self.address}: {tail_file(self.log)}")
        return f"started on {self.address} (pid {proc.pid}), scraping every {interval} from {self.targets_file.name}"

    def stop(self) -> str:
        pid = self.pid()
        if pid is None:
            return "not running"
        stop_pid(pid, "prometheus", signal.SIGTERM, 10.0)
        return "stopped"

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is None:
            return ComponentStatus(self.name, False, self.address, None, "not running")
        if not self.ready():
            return ComponentStatus(self.name, False, self.address, pid, "running but not ready")
        return ComponentStatus(
            self.name, True, self.address, pid, f"job {self.job}, scrape every {self.interval_s:g}s"
        )


def prometheus_tool(name: str = "prometheus") -> str:
    """The path of ``prometheus`` or ``promtool``, both from Debian's prometheus package."""
    found = shutil.which(name)
    if found is None:
        raise SandboxError(f"{name} is not installed: run `make setup` (it installs the prometheus package)")
    return found

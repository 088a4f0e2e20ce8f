"""Prometheus for the sandbox: scrapes every demo instance each second, on 127.0.0.1 only.

Targets come from the file the local platform rewrites whenever an instance starts or stops
(``platform.local.targets_file``, Prometheus file-based service discovery), each labelled with
its ``release`` and ``instance``; the job is the environment's service name, so the queries'
``{service}`` matches it. Storage lives in ``<sandbox>/prometheus``. Prometheus picks up a
changed targets file on its ~5 s discovery cycle, so a new instance's first sample arrives a
few seconds after it starts.

With ``pods=PodDiscovery(...)`` the job finds its targets itself instead, as a production
Prometheus does: Kubernetes service discovery (role ``pod``) on the sandbox's API server, the
pods of one namespace that ask to be scraped by the conventional ``prometheus.io/*``
annotations, each labelled with the ``release`` its container's image names in the sandbox's
registry (sandbox.images), its ``instance`` (the pod's name), ``pod`` and ``namespace``. The
discovery watches the API; the scrape manager takes its changes on a ~5 s cycle. Debian's
Prometheus is built without Kubernetes discovery, so this one runs the tools cache's build
(``make k8s-tools``, sandbox.control_plane.tool).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from releasegate.config import MetricsSettings
from releasegate.release_names import fill
from sandbox import images
from sandbox.common import ComponentStatus, SandboxError, pid_from_file, stop_pid, tail_file, wait_for
from sandbox.control_plane import tool

CONFIG = """\
# Written by `python -m sandbox up`: Prometheus for the sandbox at {address}.
global:
  scrape_interval: {interval}
  scrape_timeout: {timeout}
  evaluation_interval: {interval}

rule_files: [{rules}]

scrape_configs:
  - job_name: {job}
{discovery}"""

FILE_SD = """\
    metrics_path: /metrics
    file_sd_configs:
      - files: [{targets}]
        refresh_interval: 5s
"""

POD_SD = """\
    metrics_path: /metrics
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: {kubeconfig}
        namespaces:
          names: [{namespace}]
    relabel_configs:
      # the pods that ask to be scraped (the conventional annotations), while they run
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        regex: "true"
        action: keep
      - source_labels: [__meta_kubernetes_pod_phase]
        regex: Running
        action: keep
      - source_labels: [__meta_kubernetes_pod_container_init]
        regex: "true"
        action: drop
      # one target per container port: keep the port named by prometheus.io/port (every declared
      # port without it), so the target is the container that serves it and its image is the
      # one the release is read from (a sidecar's image names no release of the service)
      - source_labels: [__meta_kubernetes_pod_container_port_number]
        target_label: __tmp_port
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: (.+)
        target_label: __tmp_port
      - source_labels: [__meta_kubernetes_pod_container_port_number]
        regex: \\d+
        action: keep
      - source_labels: [__meta_kubernetes_pod_container_port_number]
        target_label: __tmp_port
        action: keepequal
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        regex: (.+)
        target_label: __metrics_path__
      # a pod's address in the API is 100.B.C.D, but its process listens on 127.B.C.D: the
      # endpoint controller refuses loopback addresses in EndpointSlices, so the sandbox gives
      # pods their loopback twin's address in 100.96.0.0/11 (sandbox.control_plane.listen_address)
      - source_labels: [__meta_kubernetes_pod_ip, __tmp_port]
        regex: 100\\.(\\d+\\.\\d+\\.\\d+);(\\d+)
        replacement: 127.$1:$2
        target_label: __address__
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: instance
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      # the release is the image's tag read in the registry's shape for its repository
{releases}"""


@dataclass(frozen=True)
class PodDiscovery:
    """Scrape the pods of ``namespace`` found through the API server of ``kubeconfig`` (the
    sandbox cluster's ``<dir>/kubeconfig``) instead of the local platform's targets file; the
    registry ``catalog`` says how an image's tag names its release."""

    kubeconfig: Path
    namespace: str
    catalog: Path = images.DEFAULT

    def release_rules(self) -> str:
        """One relabel rule per repository of the registry: ``release`` from the container's image."""
        rules = []
        for repository, image in sorted(images.Catalog.load(self.catalog).images.items()):
            if image.commits is None:
                head, _, tail = image.tag.partition("{release}")
                named = {"$1": re.escape(head) + "(.+)" + re.escape(tail)}
            else:  # prod-{sha}: a regex cannot read a release from a commit, so one rule per release
                known = image.tagged_commits()
                assert known is not None
                named = {r: re.escape(fill(image.tag, r, known)) for r in sorted(known.shas)}
            for replacement, tag in named.items():
                rules.append(
                    "      - source_labels: [__meta_kubernetes_pod_container_image]\n"
                    f"        regex: {json.dumps(re.escape(repository) + ':' + tag)}\n"
                    f"        replacement: {json.dumps(replacement)}\n"
                    "        target_label: release\n"
                )
        return "".join(rules)

    def render(self) -> str:
        """The job's discovery and relabelling, under its ``job_name``."""
        return POD_SD.format(
            kubeconfig=json.dumps(str(self.kubeconfig)),
            namespace=json.dumps(self.namespace),
            releases=self.release_rules(),
        )


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

    def __init__(
        self,
        sandbox_dir: Path,
        metrics: MetricsSettings,
        targets_file: str | None,
        job: str,
        *,
        pods: PodDiscovery | None = None,
    ) -> None:
        """``targets_file`` is the local platform's (file-based discovery); with ``pods`` the job
        discovers the pods of a namespace on Kubernetes instead and needs no file."""
        if targets_file is None and pods is None:
            raise SandboxError("Prometheus needs a targets file or a PodDiscovery to find its targets")
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
        self.targets_file = Path(targets_file) if targets_file is not None else None
        self.pods = pods
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
        if self.pods is not None:
            discovery = self.pods.render()
            source = f"the pods of namespace {self.pods.namespace}"
        else:
            assert self.targets_file is not None
            if not self.targets_file.exists():  # nothing deployed yet: an empty target list, watched
                self.targets_file.parent.mkdir(parents=True, exist_ok=True)
                self.targets_file.write_text("[]\n", encoding="utf-8")
            discovery = FILE_SD.format(targets=json.dumps(str(self.targets_file)))
            source = self.targets_file.name
        interval = f"{self.interval_s:g}s"
        self.rules.write_text(RULES.format(job=json.dumps(self.job)))
        self.config.write_text(
            CONFIG.format(
                address=self.address,
                interval=interval,
                timeout=interval,
                job=json.dumps(self.job),
                discovery=discovery,
                rules=json.dumps(str(self.rules)),
            )
        )
        argv = [
            kubernetes_prometheus() if self.pods is not None else prometheus_tool(),
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
        return f"started on {self.address} (pid {proc.pid}), scraping every {interval} from {source}"

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


def kubernetes_prometheus() -> str:
    """A Prometheus with Kubernetes service discovery: Debian's package leaves it out (its
    client-go is not packaged), so the tools cache builds one from Prometheus's Go module."""
    return str(tool("prometheus"))


def prometheus_tool(name: str = "prometheus") -> str:
    """The path of ``prometheus`` or ``promtool``, both from Debian's prometheus package."""
    found = shutil.which(name)
    if found is None:
        raise SandboxError(f"{name} is not installed: run `make setup` (it installs the prometheus package)")
    return found

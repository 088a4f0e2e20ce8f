# releasegate: the two commands in the README. Each one sets itself up on a fresh machine:
# the system packages (PostgreSQL, Redis, nginx, Prometheus) when missing, then .venv with releasegate.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ENV    ?= sandbox
RELEASE ?= 2.0.0

.PHONY: demo demo-kubernetes test report bench lint setup system-packages clean k8s-tools k8s-stop

# A fresh sandbox (1.0.0), the gates deploy $(RELEASE) through it, then the sandbox is stopped
# so that nothing keeps running behind your back (KEEP=1 leaves it up to look around).
demo: setup
	@$(BIN)/python -m sandbox down --quiet
	@echo "== releasegate demo: the sandbox starts at 1.0.0; $(RELEASE) goes through every gate =="
	@$(BIN)/pytest gates/ --env=$(ENV) --release=$(RELEASE); code=$$?; \
	  echo; echo "Reports: reports/deployment-report.md  reports/report.html  reports/junit.xml"; \
	  if [ -z "$(KEEP)" ]; then $(BIN)/python -m sandbox down --quiet && \
	    echo "The sandbox is stopped (make demo KEEP=1 leaves it running)."; fi; \
	  exit $$code

# Summit's production example on a real Kubernetes control plane (sandbox/replicas/demo.py): Helm
# and the Argo Rollout canary, each step judged by the gates; 4.0.0 passes every gate (exit 0), a
# crash-looping image is rolled back with helm rollback (exit 11). KEEP=1 leaves it running.
demo-kubernetes: setup k8s-tools
	@$(BIN)/python -m sandbox.replicas.demo $(if $(KEEP),--keep)

# Four workers, a file each (its tests share a sandbox): the integration tests mostly wait. Keep
# files of slow tests small, so that no one file decides how long the run takes (--durations);
# the files are handed out longest first (tests/conftest.py LONGEST_FIRST), not xdist's order.
# The Kubernetes tests need the control plane's binaries: built first when missing (k8s-tools).
test: setup k8s-tools
	$(BIN)/pytest tests/ --timeout=900 -n 4 --dist loadfile --no-loadscope-reorder --durations=30

# The figures in BENCHMARKS.md (several minutes; not part of make test).
bench: setup
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/rollback_time.py

# The Allure report of the last run, as one HTML file that opens from disk (npm's
# allure-commandline with the machine's Java, installed into .tools/ on first use).
REPORTS ?= reports
ALLURE  := .tools/node_modules/.bin/allure
report: $(ALLURE)
	@test -d $(REPORTS)/allure-results || { echo "no $(REPORTS)/allure-results: run the gates first (make demo)"; exit 1; }
	ALLURE_NO_ANALYTICS=true $(ALLURE) generate --single-file $(REPORTS)/allure-results -o $(REPORTS)/allure --clean
	@echo "Allure report: $(REPORTS)/allure/index.html"

$(ALLURE):
	@command -v java >/dev/null || { echo "Allure needs Java 11+ (apt-get install default-jre-headless)"; exit 1; }
	npm install --prefix .tools --no-audit --no-fund --loglevel=error allure-commandline@2

# The Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
# helm, the Argo Rollouts controller with its CRDs, metrics-server and Prometheus with Kubernetes
# discovery, built from their Go modules once per version into $(K8S_TOOLS) (outside the
# checkout: a fresh clone reuses them) and skipped when already there (0.2 s). Cold: 24 min
# (one build, idle machine, modules downloaded too); see BENCHMARKS.md. tools/k8s/smoke.sh starts them on loopback and stops them.
K8S_TOOLS ?= $(or $(RELEASEGATE_TOOLS),$(HOME)/.cache/releasegate/tools)
k8s-tools:
	RELEASEGATE_TOOLS=$(K8S_TOOLS) bash tools/k8s/build.sh

# Stops every control plane, node agent and Argo controller a killed test or demo left running
# (the sandbox's own: python -m sandbox down).
k8s-stop:
	@$(BIN)/python -m sandbox.cluster --stop-leftovers

lint: setup
	$(BIN)/ruff check .

setup: system-packages $(STAMP)

system-packages:
	@sh .ci/system-packages.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[sandbox,dev]'
	@touch $(STAMP)

clean:
	-$(BIN)/python -m sandbox down --quiet
	rm -rf $(VENV) .tools reports/*.xml reports/*.html reports/*.md reports/*.sqlite reports/allure*

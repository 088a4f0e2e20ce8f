# releasegate: the two commands in the README. Each one sets itself up on a fresh machine:
# the system packages (PostgreSQL, Redis, nginx, Prometheus) when missing, then .venv with releasegate.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ENV    ?= sandbox
RELEASE ?= 2.0.0

.PHONY: demo test lint setup system-packages clean

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

test: setup
	$(BIN)/pytest tests/ --timeout=900

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
	rm -rf $(VENV) reports/*.xml reports/*.html reports/*.md reports/*.sqlite

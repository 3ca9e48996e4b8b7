# A thin wrapper over the project's commands, so that CI, a developer and a new user run the same thing.
# `make help` lists the targets.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLUSTER := $(BIN)/python -m local_cluster
export PATH := $(CURDIR)/.cluster/bin:$(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help host-packages setup binaries cluster-up cluster-down cluster-status cluster-destroy lint test manifests docs demo demo-clean bench bench-scale

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

$(BIN)/.installed: pyproject.toml cluster/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./cluster
	touch $@

setup: $(BIN)/.installed ## Create .venv with the project, its development tools and the local cluster's tooling

# The real node's runtime and network tools, and what builds its images, from Debian's packages (as root).
HOST_PACKAGES := runc iptables ipset conntrack iproute2 kmod buildah mmdebstrap busybox-static gcc libc6-dev
host-packages: ## Install the Debian packages the local cluster's real node needs (missing ones only)
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# With KUBECONFIG set (kind in a user's CI) only the clients are built; the local cluster builds the rest
# itself if it has to boot after all.
binaries: setup $(if $(KUBECONFIG),,host-packages) ## Build (or reuse from the cache) the local cluster's binaries into .cluster/bin
	$(CLUSTER) build $(if $(KUBECONFIG),--clients-only)

cluster-up: setup host-packages ## Boot the local cluster (idempotent); KUBECONFIG=.cluster/kubeconfig
	$(CLUSTER) up

cluster-down: setup ## Stop every process of the local cluster (its state stays)
	$(CLUSTER) down

cluster-status: setup ## Show which processes of the local cluster run
	$(CLUSTER) status

cluster-destroy: setup ## Stop the local cluster and delete its state (the binary cache stays)
	$(CLUSTER) destroy

lint: setup ## ruff, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

manifests: binaries ## Regenerate the CRD, values.schema.json and operator/config from the API models and the chart
	$(BIN)/python -m tenant_operator.manifests

# helm-docs with its options pinned: each chart's README.md from its README.md.gotmpl, Chart.yaml and the `# --`
# comments of values.yaml, values in file order. helm-docs reports problems (a template that does not parse, a
# chart it skips) as log lines and still exits 0, so any line it logs fails the target.
# tests/charts/test_chart_docs.py runs this target on a copy of charts/ (DOCS_CHARTS) and compares.
HELM_DOCS := .cluster/bin/helm-docs
DOCS_CHARTS := charts
docs: binaries ## Regenerate each chart's README with helm-docs from README.md.gotmpl and values.yaml's comments
	@log=$$($(HELM_DOCS) --chart-search-root=$(DOCS_CHARTS) --template-files=README.md.gotmpl \
		--values-file=values.yaml --output-file=README.md --sort-values-order=file --log-level=warning 2>&1); \
	status=$$?; \
	if [ $$status -ne 0 ] || [ -n "$$log" ]; then printf '%s\n' "$$log" >&2; exit 1; fi
	@echo "helm-docs wrote $(DOCS_CHARTS)/*/README.md"

test: binaries lint ## Every test tier: unit, charts, post-renderer, local cluster, end to end
	$(BIN)/pytest

demo: cluster-up ## The main job on the local cluster: the operator chart and its pod, the guide's example Tenant (BACKEND=flux: through Flux)
	$(BIN)/python -m local_cluster.demo $(if $(BACKEND),--backend $(BACKEND))

demo-clean: setup ## Delete the demo's Tenant and wait for its namespace to go, uninstall the operator chart
	$(BIN)/python -m local_cluster.demo --clean

bench: binaries ## Benchmarks (bench/): the post-renderer's time per release beside helm template alone
	$(BIN)/python bench/postrender.py

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

# The official run: hours on 2 cores (see bench/scale.py); results in bench/results (scale.md, scale.json, PNGs).
bench-scale: cluster-up $(BIN)/.bench-installed ## N tenants at once (N=1..1000), ours beside Helm alone and its peers
	$(BIN)/python bench/scale.py --n 1,10,100,500,1000 --repetitions 3 --concurrency 4 --sweep 1,2,4,10 \
		--sweep-n 100 --idle-seconds 300 --out bench/results

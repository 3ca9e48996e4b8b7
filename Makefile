# A thin wrapper over the project's commands, so that CI, a developer and a new user run the same thing.
# `make help` lists the targets.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLUSTER := $(BIN)/python -m local_cluster
export PATH := $(CURDIR)/.cluster/bin:$(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup binaries cluster-up cluster-down cluster-status cluster-destroy lint test manifests docs demo demo-clean bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed ## Create .venv with the project and its development tools

# With KUBECONFIG set (kind in a user's CI) only the clients are built; the local cluster builds the rest
# itself if it has to boot after all.
binaries: setup ## Build (or reuse from the cache) etcd, Kubernetes, KWOK, Helm and ct into .cluster/bin
	$(CLUSTER) build $(if $(KUBECONFIG),--clients-only)

cluster-up: setup ## Boot the local cluster (idempotent); KUBECONFIG=.cluster/kubeconfig
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

docs: setup ## Regenerate each chart's README from the comments of its values.yaml
	$(BIN)/python charts/gen_readme.py charts/tenant charts/tenant-operator

test: binaries lint ## Every test tier: unit, charts, post-renderer, local cluster, end to end
	$(BIN)/pytest

demo: cluster-up ## The main job on the local cluster: the operator chart and its pod, the guide's example Tenant
	$(BIN)/python -m local_cluster.demo

demo-clean: setup ## Delete the demo's Tenant and wait for its namespace to go, uninstall the operator chart
	$(BIN)/python -m local_cluster.demo --clean

bench: binaries ## Benchmarks (bench/): the post-renderer's time per release beside helm template alone
	$(BIN)/python bench/postrender.py

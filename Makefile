# Thin wrappers: every target is one documented command.
.PHONY: setup test lint up down bench bench-setup bench-node test-node images chart kind-load

setup:           ## install everything into .venv/ and .tools/ (idempotent)
	scripts/setup

test: setup      ## the README's test command: quality gates + every test tier
	scripts/test

lint:            ## ruff, format check, mypy, import contracts
	scripts/test --lint-only

up: setup        ## run camfleet locally
	.venv/bin/camfleet up

down:
	.venv/bin/camfleet down

bench: setup     ## every benchmark, by hand (~20 min); copy the printed tables into docs/benchmarks.md
	.venv/bin/python benchmarks/operator_convergence.py --sizes 100 500 1000 --repeats 3
	.venv/bin/python benchmarks/gateway_fanout.py
	.venv/bin/python benchmarks/ingest_media.py cpu --cameras 1,5,20 --seconds 20
	.venv/bin/python benchmarks/ingest_media.py latency --seconds 60
	.venv/bin/python benchmarks/viewer_drift.py --seconds 60
	.venv/bin/python benchmarks/viewer_cpu.py --seconds 20
	.venv/bin/python benchmarks/ingest_startup.py
	.venv/bin/python benchmarks/peers.py --cameras 1,5,20 --viewers 1,10 --seconds 12  # peers from make bench-setup

bench-setup:     ## the benchmark peers (go2rtc, MediaMTX) for benchmarks/peers.py, cached like setup's builds
	scripts/bench-setup

bench-node: setup  ## root: the real node (start, Camera → Live vs the local runner, 20 Cameras' CPU/RSS)
	.venv/bin/python benchmarks/node_bench.py --repeats 5 --cameras 20 --seconds 20

test-node: setup   ## root: the shipped form on the test bed's real node (tests/node)
	scripts/test tests/node

# --- Packaging (images, Helm chart, kustomize base) -------------------------------------------
APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/camfleet/Chart.yaml)
REGISTRY ?= ghcr.io/camfleet
DOCKER ?= docker
IMAGE_BUILD_ARGS ?=
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
COMPONENTS := operator gateway ingest archiver

images: $(addprefix image-,$(COMPONENTS))  ## build the four images, tagged with the chart's appVersion

image-%:         ## build one image: make image-operator (REGISTRY=..., DOCKER=podman, IMAGE_BUILD_ARGS=...)
	$(DOCKER) build -f images/$*/Dockerfile -t $(REGISTRY)/camfleet-$*:$(APP_VERSION) \
		--build-arg VERSION=$(APP_VERSION) --build-arg REVISION=$(REVISION) $(IMAGE_BUILD_ARGS) .

chart:           ## regenerate from their sources: the chart's CRD copy, its README's values table, deploy/
	cp crds/camera.yaml charts/camfleet/crds/camera.yaml  # Helm installs CRDs only from the chart's crds/
	.venv/bin/python scripts/render-chart-readme
	.venv/bin/python scripts/render-deploy

kind-load: images  ## load the images into the kind cluster "camfleet" (see docs/kubernetes.md)
	kind load docker-image --name camfleet $(foreach c,$(COMPONENTS),$(REGISTRY)/camfleet-$(c):$(APP_VERSION))

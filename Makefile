# StructVPR for ROS 2. `make help` lists the targets.
SHELL := /bin/bash
ROOT  := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
ENV   := source $(ROOT)/install/setup.bash &&
PYTEST_ARGS ?=
# The house rules (docs/ARCHITECTURE.md): ruff lint + format check, the import-layer contracts.
LINT  := cd $(ROOT) && ruff check . && ruff format --check . && lint-imports --no-cache

.PHONY: help setup lint test demo slam-demo bench clean

help:
	@echo "make setup  - venv with pinned deps, ImageNet weights, structvpr_msgs, install/setup.bash"
	@echo "make lint   - the house rules: ruff (lint + format check) and the import-layer contracts"
	@echo "make test   - setup (with real test images) + lint + the whole test suite"
	@echo "make demo   - setup + the end-to-end demo on the real Corridor images"
	@echo "make slam-demo [SLAM_DEMO_OUT=DIR] - setup + the SLAM back-end demo on a synthetic route (default slam_demo_out/)"
	@echo "make bench  - setup + performance figures (JSON in bench.json)"
	@echo "make clean  - remove build products (keeps .venv and downloads)"

setup:
	@bash scripts/setup_env.sh

lint: setup
	@$(ENV) $(LINT)

test:
	@WITH_TEST_ASSETS=1 bash scripts/setup_env.sh
	@$(ENV) $(LINT)
	@$(ENV) python -m pytest $(PYTEST_ARGS)

demo: setup
	@$(ENV) python scripts/demo.py --out demo_out

# A synthetic route with drifting odometry, structvpr (mapping, verification) and the pose graph.
SLAM_DEMO_OUT ?= slam_demo_out
slam-demo: setup
	@$(ENV) python -m structvpr_ros.slam_demo --out $(SLAM_DEMO_OUT)

bench: setup
	@$(ENV) structvpr bench --json bench.json

clean:
	rm -rf build install demo_out slam_demo_out

# `make demo`, `make test` and `make bench` set up .venv themselves on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU/CUDA build of torch to install; override on a GPU machine if you need another one.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# Debian packages the demo (ffmpeg: videos) and the tests (chromium: the viewer in a browser) run.
SYSTEM_COMMANDS := ffmpeg chromium
SYSTEM_STAMP := $(VENV)/.system-packages

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(SYSTEM_STAMP): $(STAMP)
	@missing=""; for command in $(SYSTEM_COMMANDS); do command -v $$command >/dev/null || missing="$$missing $$command"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi
	touch $(SYSTEM_STAMP)

demo: $(SYSTEM_STAMP)
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

test: $(SYSTEM_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmark, on CUDA when available: make bench BENCH_ARGS="--device cuda --quick" (bench/README.md).
bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check in2n tests scripts bench
	$(BIN)/ruff format --check in2n tests scripts bench

clean:
	rm -rf $(VENV) .demo .bench

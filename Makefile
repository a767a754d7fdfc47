# `make demo`, `make test` and `make bench` set up .venv themselves on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU/CUDA build of torch to install; override on a GPU machine if you need another one.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# pytest-xdist workers for make test and make test-fast; each computes on one thread (tests/conftest.py), so two
# fill two cores. Each test module stays on one worker; the trained runs the modules share are built once.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --durations 15
# Debian packages the demo needs (ffmpeg: videos), and the tests besides it (chromium: the viewer in a browser).
DEMO_COMMANDS := ffmpeg
TEST_COMMANDS := ffmpeg chromium

.PHONY: demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Install the Debian packages among $(1) that are missing (as root, or through sudo).
define install_commands
	@missing=""; for command in $(1); do command -v $$command >/dev/null || missing="$$missing $$command"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi
endef

demo: $(STAMP)
	$(call install_commands,$(DEMO_COMMANDS))
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

test: $(STAMP)
	$(call install_commands,$(TEST_COMMANDS))
	$(PYTEST) $(PYTEST_ARGS)

# The unit tests alone: everything but the end-to-end runs of the real commands.
test-fast: $(STAMP)
	$(PYTEST) -m "not e2e" $(PYTEST_ARGS)

# The benchmark, on CUDA when available: make bench BENCH_ARGS="--device cuda --quick" (bench/README.md).
bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check in2n tests scripts bench
	$(BIN)/ruff format --check in2n tests scripts bench

clean:
	rm -rf $(VENV) .demo .bench

# Two commands do all the set-up on a fresh Debian/Ubuntu machine:
#   make demo   virtualenv + install + the bundled demo line (simulators, broker, gateway)
#   make test   virtualenv + test tools + Mosquitto + ruff, mypy and the whole test suite
# Also: make bench (benchmarks, figures printed), make faults (the fault campaign, about half
# an hour: docs/reliability.md), make fuzz (the fuzzing campaign: docs/fuzzing.md),
# make docs (regenerate the config reference),
# make lock (update the lock file constraints.txt after a dependency change).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench faults fuzz docs clean venv mosquitto test-tools lock

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Tracegate needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "Cannot create a virtualenv: install it with: sudo apt-get install python3-venv"; \
	    exit 1; fi; }
	@$(BIN)/pip install -q --upgrade pip

# Every dependency at the version of the lock file constraints.txt, the same that line PCs get
# (`tracegate service install` uses it too). tests/test_service.py fails when .venv drifts from it.
$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	@touch $@ $(VENV)/.installed-run

# After changing a dependency in pyproject.toml: the newest versions its ranges allow, into .venv
# and the lock file. Commit constraints.txt with pyproject.toml.
lock: | $(BIN)/python
	$(BIN)/pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	$(BIN)/tracegate service freeze > constraints.txt.new && mv constraints.txt.new constraints.txt
	@touch $(VENV)/.installed-test $(VENV)/.installed-run

venv: $(VENV)/.installed-run

# Mosquitto (broker for the demo and the tests) from Debian's package when missing.
mosquitto:
	@if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Mosquitto (Debian package mosquitto) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; \
	else echo "Mosquitto is missing. Install it with: sudo apt-get install mosquitto"; exit 1; fi

# systemd-analyze checks the unit file in the tests (Debian package systemd); tshark, Wireshark's
# LLRP dissector, judges the reader simulator's bytes (Debian package tshark); Chromium shows
# the status page to Playwright (Debian package chromium).
test-tools:
	@if command -v systemd-analyze >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing systemd-analyze (Debian package systemd) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; \
	else echo "Note: systemd-analyze is missing (sudo apt-get install systemd); " \
	  "the unit-file tests will be skipped."; fi
	@if command -v tshark >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing tshark (Debian package tshark) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark; \
	else echo "Note: tshark is missing (sudo apt-get install tshark); " \
	  "the LLRP simulator's Wireshark check will be skipped."; fi
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Chromium (Debian package chromium) for the status page test ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "Note: chromium is missing (sudo apt-get install chromium); " \
	  "the status page's browser test will be skipped."; fi

demo: $(VENV)/.installed-run mosquitto
	$(BIN)/tracegate demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test mosquitto test-tools
	$(BIN)/pytest

test: lint typecheck unit

bench: $(VENV)/.installed-test mosquitto
	$(BIN)/python -m bench

faults: $(VENV)/.installed-test mosquitto
	$(BIN)/python -m bench.faults --update-docs

fuzz: $(VENV)/.installed-test
	$(BIN)/python -m bench.fuzz --update-docs

docs: $(VENV)/.installed-run
	$(BIN)/python -m gateway.config.docs > docs/configuration.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# certhub — the two commands: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ./certhub-data

.PHONY: venv demo test lint typecheck unit bench clean azure-venv browser

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/certhub demo --data-dir $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) azure-venv browser
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/issuance.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The official Azure IoT SDKs live in their own virtualenv: azure-iot-device 2.14.0
# needs paho-mqtt<2 and azure-iot-hub 2.7.0 imports six without declaring it.
AZ_VENV := .venv-azure
$(AZ_VENV)/.installed:
	test -x $(AZ_VENV)/bin/python || $(PY) -m venv $(AZ_VENV)
	$(AZ_VENV)/bin/pip install --quiet 'azure-iot-device==2.14.0' 'azure-iot-hub==2.7.0' six 'paho-mqtt<2' \
	  || { echo "azure SDK virtualenv could not be built"; rm -f $(AZ_VENV)/.installed; exit 0; }
	touch $(AZ_VENV)/.installed

azure-venv: $(AZ_VENV)/.installed

# Debian's chromium for the dashboard's browser test (playwright drives it; no download of
# its own browsers). Without root or apt the test is skipped, and says so.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	      || echo "chromium could not be installed: the dashboard browser test will be skipped"; \
	  else echo "no root/apt-get: the dashboard browser test will be skipped"; fi; }

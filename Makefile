# Two commands on a fresh machine: `make train` and `make test`.
# Both bootstrap .venv and reinstall only when pyproject.toml or this file changes.
# The brax extra is installed too, so the suite tests the Brax adapter.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INSTALL_LOG := $(VENV)/install.log

.PHONY: train test test-slow lint clean

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing klipjax and its dependencies into $(VENV) (log: $(INSTALL_LOG))"
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -e '.[dev,brax]'; } \
		> $(INSTALL_LOG) 2>&1 || { tail -n 30 $(INSTALL_LOG); exit 1; }
	@# An editable install leaves klipjax's own modules uncompiled; where Python may
	@# not write bytecode (PYTHONDONTWRITEBYTECODE), every command would compile them.
	@$(PY) -m compileall -q klipjax >> $(INSTALL_LOG) 2>&1
	@touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/klipjax train

# One worker per core, a test file's tests on one worker (its module fixtures built once).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check klipjax tests scripts examples

clean:
	rm -rf $(VENV) .pytest_cache

# policy-arena (distribution robot-policy-arena): every target creates or reuses the virtual environment in .venv
# and installs what it needs: the dev extra (the server, the replica and the test tools).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=
# The suite runs in this many pytest-xdist workers, a test module at a time on one worker (its tests share what
# the module builds once, and the two serve checks their database); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

.PHONY: install test demo serve migrate lint bench wheel clean chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# The distribution's old name: a .venv made before the rename would hold both, sharing console scripts.
	@$(PY) -m pip uninstall --quiet --yes policy-arena 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

migrate: install
	$(PY) manage.py migrate --noinput

test: install chromium
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium through Playwright (never `playwright install`: no browser downloads).
chromium:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "note: /usr/bin/chromium is missing and could not be installed; browser tests will skip"; }

demo: install
	rm -rf var/demo
	ARENA_VAR_DIR=var/demo $(PY) manage.py demo $(DEMO_ARGS)

serve: install
	$(PY) -m arena.serve $(SERVE_ARGS)

lint: install
	$(VENV)/bin/ruff check arena ranking policy_server evaluator_client benchmarks tests

bench: install
	$(PY) -m benchmarks.ranking_speed --quick
	$(PY) -m benchmarks.protocol --quick
	$(PY) -m benchmarks.replica --quick
	$(PY) -m benchmarks.release_build --quick

# The sdist and the wheel (dist/robot_policy_arena-<version>-py3-none-any.whl) that a lab or a policy owner installs.
wheel: install
	$(PY) -m build --outdir dist

clean:
	rm -rf $(VENV) var dist build

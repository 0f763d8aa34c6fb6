# eventsink — see README.md.  `make` builds build/eventsink.
CC      ?= cc
PKGS    := rdkafka lua5.4 libpq libmicrohttpd libcurl
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral \
           -D_GNU_SOURCE -Isrc -Ibuild/gen $(shell pkg-config --cflags $(PKGS) openssl)
LDLIBS  := $(shell pkg-config --libs $(PKGS) openssl) -l:liblua5.4-cjson.so.0 -lpthread -lm

SRC     := $(filter-out src/main.c,$(wildcard src/*.c))
ASSETS  := $(sort $(wildcard lua/*.lua) $(wildcard sql/*.sql) $(wildcard web/*))
UNIT    := $(wildcard tests/unit/test_*.c)

OBJ      := $(SRC:src/%.c=build/obj/%.o) build/obj/assets_gen.o
ASAN_OBJ := $(SRC:src/%.c=build/asan/obj/%.o) build/asan/obj/assets_gen.o
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all asan test unit e2e fuzz bench api-rate demo deps format format-check clean chaos valgrind
all: build/eventsink

deps:
	@scripts/install-deps.sh

build/gen/assets_gen.c: $(ASSETS) scripts/gen-assets.sh
	@mkdir -p $(@D)
	@echo "  GEN   $@"; scripts/gen-assets.sh $@ $(ASSETS)

build/obj/assets_gen.o: build/gen/assets_gen.c
	@mkdir -p $(@D)
	@echo "  CC    $<"; $(CC) $(CFLAGS) -c -o $@ $<
build/obj/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(@D)
	@echo "  CC    $<"; $(CC) $(CFLAGS) -c -o $@ $<
build/eventsink: build/obj/main.o $(OBJ)
	@echo "  LD    $@"; $(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

build/asan/obj/assets_gen.o: build/gen/assets_gen.c
	@mkdir -p $(@D)
	@echo "  CC    $< (asan)"; $(CC) $(CFLAGS) $(ASAN_FLAGS) -c -o $@ $<
build/asan/obj/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(@D)
	@echo "  CC    $< (asan)"; $(CC) $(CFLAGS) $(ASAN_FLAGS) -c -o $@ $<
build/asan/eventsink: build/asan/obj/main.o $(ASAN_OBJ)
	@echo "  LD    $@"; $(CC) $(CFLAGS) $(ASAN_FLAGS) -o $@ $^ $(LDLIBS)
asan: build/asan/eventsink

# unit tests (cmocka), built and run under ASan+UBSan
build/asan/unit/%: tests/unit/%.c $(ASAN_OBJ) $(wildcard tests/unit/*.h)
	@mkdir -p $(@D)
	@echo "  LD    $@"; $(CC) $(CFLAGS) $(ASAN_FLAGS) -Wno-deprecated-declarations -o $@ $< $(ASAN_OBJ) $(LDLIBS) -lcmocka
unit: $(UNIT:tests/unit/%.c=build/asan/unit/%)
	@failed=0; for t in $^; do echo "== $$t"; $$t || failed=$$((failed + 1)); done; \
	 if [ $$failed -ne 0 ]; then echo "unit: $$failed test program(s) failed"; exit 1; fi

# fuzzing (libFuzzer, clang): each target runs FUZZ_SECONDS on its seed corpus
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
              -std=gnu11 -D_GNU_SOURCE -Isrc -Ibuild/gen $(shell pkg-config --cflags $(PKGS) openssl)
FUZZ_OBJ := $(SRC:src/%.c=build/fuzz/obj/%.o) build/fuzz/obj/assets_gen.o
build/fuzz/obj/assets_gen.o: build/gen/assets_gen.c
	@mkdir -p $(@D)
	@echo "  CC    $< (fuzz)"; clang $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
build/fuzz/obj/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(@D)
	@echo "  CC    $< (fuzz)"; clang $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
build/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJ)
	@echo "  LD    $@"; clang $(FUZZ_FLAGS) -fsanitize=fuzzer -Wno-deprecated-declarations \
	    -o $@ $< $(FUZZ_OBJ) $(LDLIBS)
fuzz: $(FUZZ_TARGETS:%=build/fuzz/%)
	@failed=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus/$$t build/fuzz/crashes/$$t; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=build/fuzz/crashes/$$t/ build/fuzz/corpus/$$t tests/fuzz/corpus/$$t \
	    2>build/fuzz/$$t.log || { failed=$$((failed + 1)); tail -40 build/fuzz/$$t.log; }; \
	  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" build/fuzz/$$t.log | tr '\n' ' '; echo; \
	done; if [ $$failed -ne 0 ]; then echo "fuzz: $$failed target(s) found a crash (see build/fuzz/crashes)"; exit 1; fi

test:
	@scripts/install-deps.sh
	tests/run.sh

e2e: all asan
	tests/run-e2e.sh

# the Python test environment and the Kafka broker jars of the end-to-end tests
PYTHON_ENV = [ -x .venv/bin/python ] && .venv/bin/python -c 'import pytest, psycopg, confluent_kafka, requests' 2>/dev/null \
	|| { python3 -m venv .venv && .venv/bin/pip install -q -r tests/requirements.txt; }; \
	tests/kafka/broker.sh fetch x

# chaos run with a ledger (tests/chaos/chaos.py): faults on a seeded schedule for
# CHAOS_SECONDS, then every produced record and every replay is accounted for.
# CHAOS_SEED=S repeats a run; EVENTSINK_BIN picks the binary (default build/eventsink).
CHAOS_SECONDS ?= 600
chaos: all
	@scripts/install-deps.sh
	@$(PYTHON_ENV)
	CHAOS_SECONDS=$(CHAOS_SECONDS) EVENTSINK_BIN=$${EVENTSINK_BIN:-$(CURDIR)/build/eventsink} \
	  .venv/bin/python tests/chaos/chaos.py

# valgrind memcheck of a short end-to-end scenario (tests/valgrind.py) on build/eventsink:
# fails on any invalid access or definite leak (suppressions: tests/valgrind.supp)
valgrind: all
	@scripts/install-deps.sh
	@$(PYTHON_ENV)
	EVENTSINK_BIN=$(CURDIR)/build/eventsink .venv/bin/python tests/valgrind.py

bench:
	@scripts/install-deps.sh
	tests/bench/run.sh

api-rate: all
	@scripts/install-deps.sh
	.venv/bin/python tests/bench/api_rate.py

demo:
	@scripts/install-deps.sh
	scripts/demo.sh

format:
	clang-format -i src/*.c src/*.h $(wildcard tests/unit/*.c)
format-check:
	clang-format --dry-run --Werror src/*.c src/*.h $(wildcard tests/unit/*.c)

clean:
	rm -rf build

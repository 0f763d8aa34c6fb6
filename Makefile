# eventsink — see README.md.  `make` builds build/eventsink.
CC      ?= cc
PKGS    := rdkafka lua5.4 libpq libmicrohttpd
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

.PHONY: all asan test unit e2e bench demo deps format format-check clean
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
build/asan/unit/%: tests/unit/%.c $(ASAN_OBJ)
	@mkdir -p $(@D)
	@echo "  LD    $@"; $(CC) $(CFLAGS) $(ASAN_FLAGS) -o $@ $< $(ASAN_OBJ) $(LDLIBS) -lcmocka
unit: $(UNIT:tests/unit/%.c=build/asan/unit/%)
	@failed=0; for t in $^; do echo "== $$t"; $$t || failed=$$((failed + 1)); done; \
	 if [ $$failed -ne 0 ]; then echo "unit: $$failed test program(s) failed"; exit 1; fi

test:
	@scripts/install-deps.sh
	tests/run.sh

e2e: all asan
	tests/run-e2e.sh

bench:
	@scripts/install-deps.sh
	tests/bench/run.sh

demo:
	@scripts/install-deps.sh
	scripts/demo.sh

format:
	clang-format -i src/*.c src/*.h $(wildcard tests/unit/*.c)
format-check:
	clang-format --dry-run --Werror src/*.c src/*.h $(wildcard tests/unit/*.c)

clean:
	rm -rf build

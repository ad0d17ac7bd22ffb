# ctdb-rs build, test and install entry points.
#
#   make demo      build, then start a 3-node local cluster (once the daemon exists) or print
#                  what would run
#   make test      every test (installs the Debian packages the tests need when run as root)
#   make install   PREFIX=/usr/local DESTDIR= ; see the variables below

PREFIX      ?= /usr/local
SBINDIR     ?= $(PREFIX)/sbin
BINDIR      ?= $(PREFIX)/bin
LIBEXECDIR  ?= $(PREFIX)/libexec
HELPERDIR   ?= $(LIBEXECDIR)/ctdb
SYSCONFDIR  ?= $(PREFIX)/etc
ETCDIR      ?= $(SYSCONFDIR)/ctdb
MANDIR      ?= $(PREFIX)/share/man
DESTDIR     ?=

CARGO       ?= cargo
# Debian packages: libtdb (the real TDB library smbd links), pkg-config to find it, and the
# stock CTDB daemon and tools, which the interop and golden tests run against.
APT_PACKAGES = libtdb-dev pkg-config ctdb tdb-tools
# Binaries built from src/bin/, installed as CTDB installs its own.
SBIN_PROGS    = ctdbd
HELPER_PROGS  = ctdb-eventd ctdb_mutex_fcntl_helper

.PHONY: all build deps test lint fuzz-check demo install uninstall clean

all: build

build:
	$(CARGO) build --release

# Installs what is missing when root, otherwise prints the one command to run.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing packages; run:  sudo apt-get install -y$$missing"; exit 1; \
		fi; \
	fi

test: deps
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fuzz-check:
	$(CARGO) check --manifest-path fuzz/Cargo.toml --bins

demo: deps build
	@scripts/demo.sh

# make bench: stock ctdbd against ctdb-rs side by side; BENCH_ARGS="--quick" for a short
# run, see bench/README.md. Without target/release/ctdbd the ctdb-rs side reads "not available".
.PHONY: bench
BENCH_ARGS ?=
bench: deps build
	bench/run.sh $(BENCH_ARGS)

install: build
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(HELPERDIR) $(DESTDIR)$(ETCDIR)
	@for p in $(SBIN_PROGS); do install -m 0755 target/release/$$p $(DESTDIR)$(SBINDIR)/$$p; done
	@for p in $(HELPER_PROGS); do install -m 0755 target/release/$$p $(DESTDIR)$(HELPERDIR)/$$p; done
	@# Sample configuration never overwrites what an admin already has.
	@for f in ctdb.conf nodes public_addresses ctdb.tunables; do \
		if [ -e $(DESTDIR)$(ETCDIR)/$$f ]; then echo "keeping existing $(ETCDIR)/$$f"; \
		else install -m 0644 etc/$$f $(DESTDIR)$(ETCDIR)/$$f; fi; \
	done

uninstall:
	@for p in $(SBIN_PROGS); do rm -f $(DESTDIR)$(SBINDIR)/$$p; done
	@for p in $(HELPER_PROGS); do rm -f $(DESTDIR)$(HELPERDIR)/$$p; done

clean:
	$(CARGO) clean

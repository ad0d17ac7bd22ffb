# ctdb-rs build, test and install entry points.
#
#   make demo      build, then start a 3-node local cluster (once the daemon exists) or print
#                  what would run
#   make test      every test (installs the Debian packages the tests need when run as root)
#   make install   PREFIX=/usr/local DESTDIR= ; see the variables below
#   make install-debian (= make install DEBIAN=1): stock Debian CTDB's paths
#   make install-only  install what target/release (BUILD_DIR) holds, without building
#   make uninstall     the same variables; keeps configuration and databases

# Layout. The default is a /usr/local install; DEBIAN=1 (or `make install-debian`) gives
# exactly the paths of Debian's stock CTDB 4.17 package, so that stock tools, scripts and
# units find our daemon. Runtime and state directories are system-wide in both layouts:
# stock `ctdb` looks for the daemon's socket under /run/ctdb whatever the prefix.
ifeq ($(DEBIAN),1)
PREFIX      = /usr
SYSCONFDIR  = /etc
MANDIR      = /usr/share/man
SYSTEMDUNITDIR = /lib/systemd/system
endif
PREFIX      ?= /usr/local
SBINDIR     ?= $(PREFIX)/sbin
BINDIR      ?= $(PREFIX)/bin
LIBEXECDIR  ?= $(PREFIX)/libexec
HELPERDIR   ?= $(LIBEXECDIR)/ctdb
SYSCONFDIR  ?= $(PREFIX)/etc
ETCDIR      ?= $(SYSCONFDIR)/ctdb
DEFAULTDIR  ?= $(SYSCONFDIR)/default
DATADIR     ?= $(PREFIX)/share/ctdb
MANDIR      ?= $(PREFIX)/share/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
RUNDIR      ?= /run/ctdb
STATEDIR    ?= /var/lib/ctdb
LOGDIR      ?= /var/log/ctdb
# Where the helpers ctdb-rs does not provide yet (lock, event tool) live:
# stock's directory. ctdbd looks for every helper in one directory, HELPERDIR; see
# ctdb-rs(7) for how the two sets meet.
STOCK_HELPERDIR ?= /usr/libexec/ctdb
DESTDIR     ?=
# Where `install-only` takes the binaries from (no build).
BUILD_DIR   ?= target/release
# Generated man pages.
MAN_BUILD_DIR ?= target/man

CARGO       ?= cargo
# Debian packages: libtdb (the real TDB library smbd links), pkg-config to find it, and the
# stock CTDB daemon and tools, which the interop and golden tests run against.
APT_PACKAGES = libtdb-dev pkg-config ctdb tdb-tools man-db groff-base samba smbclient
# Binaries built from src/bin/, installed as CTDB installs its own.
SBIN_PROGS    = ctdbd
HELPER_PROGS  = ctdb-eventd ctdb_mutex_fcntl_helper ctdb_recovery_helper ctdb_takeover_helper ctdb-ipalloc
# Installed when built (not every tree has them yet).
OPTIONAL_HELPER_PROGS =
# Stock helpers ctdbd still runs (from STOCK_HELPERDIR) until ctdb-rs has its own.
STOCK_HELPER_PROGS = ctdb_lock_helper ctdb-event

.PHONY: all build deps test lint fuzz-check demo install install-only install-debian uninstall uninstall-debian man clean

all: build

# The binaries' compiled-in directories follow the chosen layout (src/common/path.rs).
BUILD_ENV = CTDB_RS_ETCDIR=$(ETCDIR) CTDB_RS_RUNDIR=$(RUNDIR) CTDB_RS_VARDIR=$(STATEDIR) \
	CTDB_RS_DATADIR=$(DATADIR) CTDB_RS_HELPER_DIR=$(HELPERDIR) CTDB_RS_LOGDIR=$(LOGDIR)

build:
	$(BUILD_ENV) $(CARGO) build --release

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

# Man pages: roff sources in man/ with @DIR@ placeholders for the layout's directories.
MAN_PAGES = ctdbd.1 ctdb-eventd.1 ctdb_mutex_fcntl_helper.1 ctdb_recovery_helper.1 ctdb_takeover_helper.1 ctdb-ipalloc.1 ctdb.conf.5 ctdb-tunables.7 ctdb-rs.7
MAN_SUBST = -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@HELPERDIR@|$(HELPERDIR)|g' \
	-e 's|@ETCDIR@|$(ETCDIR)|g' -e 's|@RUNDIR@|$(RUNDIR)|g' -e 's|@STATEDIR@|$(STATEDIR)|g' \
	-e 's|@LOGDIR@|$(LOGDIR)|g' -e 's|@DATADIR@|$(DATADIR)|g' -e 's|@DEFAULTDIR@|$(DEFAULTDIR)|g' \
	-e 's|@STOCK_HELPERDIR@|$(STOCK_HELPERDIR)|g' -e 's|@SYSTEMDUNITDIR@|$(SYSTEMDUNITDIR)|g'

man:
	@mkdir -p $(MAN_BUILD_DIR)
	@for p in $(MAN_PAGES); do sed $(MAN_SUBST) man/$$p.in > $(MAN_BUILD_DIR)/$$p; done

# The unit and the default file carry Debian's paths; rewrite them for the layout.
UNIT_SUBST = -e 's|/usr/sbin/ctdbd|$(SBINDIR)/ctdbd|g' -e 's|/run/ctdb/|$(RUNDIR)/|g' \
	-e 's|/etc/default/ctdb|$(DEFAULTDIR)/ctdb|g' -e 's|/etc/ctdb|$(ETCDIR)|g'

install: build install-only

install-debian:
	$(MAKE) install DEBIAN=1

# Installs what is already built in $(BUILD_DIR); never touches an existing config file.
install-only: man
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(HELPERDIR) $(DESTDIR)$(ETCDIR) \
		$(DESTDIR)$(ETCDIR)/events/legacy $(DESTDIR)$(DEFAULTDIR) $(DESTDIR)$(SYSTEMDUNITDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	install -d -m 0755 $(DESTDIR)$(RUNDIR) $(DESTDIR)$(STATEDIR) $(DESTDIR)$(LOGDIR)
	install -d -m 0700 $(DESTDIR)$(STATEDIR)/volatile $(DESTDIR)$(STATEDIR)/persistent \
		$(DESTDIR)$(STATEDIR)/state
	@for p in $(SBIN_PROGS); do install -m 0755 $(BUILD_DIR)/$$p $(DESTDIR)$(SBINDIR)/$$p; done
	@for p in $(HELPER_PROGS); do install -m 0755 $(BUILD_DIR)/$$p $(DESTDIR)$(HELPERDIR)/$$p; done
	@for p in $(OPTIONAL_HELPER_PROGS); do \
		if [ -x $(BUILD_DIR)/$$p ]; then install -m 0755 $(BUILD_DIR)/$$p $(DESTDIR)$(HELPERDIR)/$$p; fi; \
	done
	@# Helpers ctdb-rs lacks so far: link stock's when our helper dir is not stock's.
	@if [ "$(HELPERDIR)" != "$(STOCK_HELPERDIR)" ]; then for h in $(STOCK_HELPER_PROGS); do \
		if [ -e $(STOCK_HELPERDIR)/$$h ] && [ ! -e $(DESTDIR)$(HELPERDIR)/$$h ]; then \
			ln -sf $(STOCK_HELPERDIR)/$$h $(DESTDIR)$(HELPERDIR)/$$h; fi; \
	done; fi
	@# Sample configuration never overwrites what an admin already has.
	@for f in ctdb.conf nodes public_addresses ctdb.tunables; do \
		if [ -e $(DESTDIR)$(ETCDIR)/$$f ]; then echo "keeping existing $(ETCDIR)/$$f"; \
		else install -m 0644 etc/$$f $(DESTDIR)$(ETCDIR)/$$f; fi; \
	done
	@if [ -e $(DESTDIR)$(DEFAULTDIR)/ctdb ]; then echo "keeping existing $(DEFAULTDIR)/ctdb"; \
	else sed $(UNIT_SUBST) etc/default.ctdb > $(DESTDIR)$(DEFAULTDIR)/ctdb && \
		chmod 0644 $(DESTDIR)$(DEFAULTDIR)/ctdb; fi
	sed $(UNIT_SUBST) etc/ctdb.service > $(DESTDIR)$(SYSTEMDUNITDIR)/ctdb.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/ctdb.service
	@for p in $(MAN_PAGES); do \
		s=$${p##*.}; gzip -9n < $(MAN_BUILD_DIR)/$$p > $(DESTDIR)$(MANDIR)/man$$s/$$p.gz; \
		chmod 0644 $(DESTDIR)$(MANDIR)/man$$s/$$p.gz; \
	done

# Removes what install put there except configuration and databases (an admin's data).
uninstall:
	@for p in $(SBIN_PROGS); do rm -f $(DESTDIR)$(SBINDIR)/$$p; done
	@for p in $(HELPER_PROGS) $(OPTIONAL_HELPER_PROGS); do rm -f $(DESTDIR)$(HELPERDIR)/$$p; done
	@for h in $(STOCK_HELPER_PROGS); do \
		if [ -L $(DESTDIR)$(HELPERDIR)/$$h ]; then rm -f $(DESTDIR)$(HELPERDIR)/$$h; fi; \
	done
	rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/ctdb.service
	@for p in $(MAN_PAGES); do s=$${p##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$$p.gz; done
	@echo "kept $(ETCDIR), $(DEFAULTDIR)/ctdb and $(STATEDIR); remove them by hand if unwanted"

uninstall-debian:
	$(MAKE) uninstall DEBIAN=1

clean:
	$(CARGO) clean

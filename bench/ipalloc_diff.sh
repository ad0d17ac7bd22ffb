#!/bin/bash
# Differential test of our IP allocation against stock CTDB 4.17's.
#
# Stock's allocation test driver (ctdb_takeover_tests, from ctdb/tests/src) is not packaged, so
# this script builds it from a Samba 4.17 source tree into a temporary directory outside the
# repository, linking against the Samba libraries that Debian's ctdb package installs (talloc,
# samba-util, samba-debug, replace). The Samba sources are compiled unmodified; a minimal
# config.h stands in for Samba's configure step. Nothing built here is kept in the repository.
#
# The driver is compiled with one addition of ours: its ipalloc_state_init() call goes through
# a hook that also honours CTDB_SET_NoIPFailback and CTDB_TEST_REBALANCE_NODES (stock's driver
# always passes false and NULL there). With neither variable set the hook passes the call
# through unchanged, so the binary behaves exactly as stock's driver.
#
# Usage:
#   bench/ipalloc_diff.sh [CASES]            build the reference, check it against the stock
#                                            test vectors, then compare CASES random inputs
#                                            (default 2000) through tests/it/ipalloc.rs
#   bench/ipalloc_diff.sh --build-only       build and print the reference binary's path
#   CTDB_IPALLOC_REFERENCE=/path/ctdb_takeover_tests bench/ipalloc_diff.sh [CASES]
#                                            use an existing reference binary
#
# Environment: SAMBA_SRC (default /work/samba-src/samba), IPALLOC_REF_DIR (build directory,
# default /tmp/ctdb-ipalloc-ref).
#
# Needs gcc and the runtime libraries of Debian's samba-libs, libtalloc2, libtevent0, libbsd0
# (all pulled in by the ctdb package); no -dev packages.

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
samba_src=${SAMBA_SRC:-/work/samba-src/samba}
ref_dir=${IPALLOC_REF_DIR:-/tmp/ctdb-ipalloc-ref}
libdir=/usr/lib/x86_64-linux-gnu

die() {
    echo "ipalloc_diff: $*" >&2
    exit 1
}

build_reference() {
    [ -f "$samba_src/ctdb/server/ipalloc_lcp2.c" ] || die "no Samba source at $samba_src"
    command -v gcc >/dev/null || die "gcc not installed"
    for lib in libtalloc.so.2 libtevent.so.0 libsamba-util.so.0 libbsd.so.0 \
        samba/libsamba-debug-samba4.so.0 samba/libreplace-samba4.so.0 \
        samba/libsocket-blocking-samba4.so.0 samba/libsys-rw-samba4.so.0 \
        samba/libtime-basic-samba4.so.0; do
        [ -e "$libdir/$lib" ] || die "missing $libdir/$lib (install ctdb)"
    done

    mkdir -p "$ref_dir/bin/default" "$ref_dir/shim/bsd"
    # Compiling from bin/default with ../../ paths reproduces the __location__ strings of
    # Samba's own build ("../../ctdb/server/ipalloc_common.c:110").
    ln -sfn "$samba_src/ctdb" "$ref_dir/ctdb"
    ln -sfn "$samba_src/lib" "$ref_dir/lib"

    cat >"$ref_dir/shim/config.h" <<'EOF'
/* Just enough configuration for lib/replace on Debian 12 (glibc 2.36, libbsd). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#define LIBREPLACE_NETWORK_CHECKS 1
#define HAVE_STDINT_H 1
#define HAVE_INTTYPES_H 1
#define HAVE_STRING_H 1
#define HAVE_STRINGS_H 1
#define HAVE_UNISTD_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_STDBOOL_H 1
#define HAVE_BOOL 1
#define HAVE__Bool 1
#define HAVE_LIMITS_H 1
#define HAVE_SYS_PARAM_H 1
#define HAVE_MALLOC_H 1
#define HAVE_SIGNAL_H 1
#define HAVE_SYS_WAIT_H 1
#define HAVE_STRDUP 1
#define HAVE_STRNDUP 1
#define HAVE_STRNLEN 1
#define HAVE_SETENV 1
#define HAVE_UNSETENV 1
#define HAVE_VASPRINTF 1
#define HAVE_ASPRINTF 1
#define HAVE_SNPRINTF 1
#define HAVE_VSNPRINTF 1
#define HAVE_C99_VSNPRINTF 1
#define HAVE_MEMMOVE 1
#define HAVE_STRTOLL 1
#define HAVE_STRTOULL 1
#define HAVE_STRTOK_R 1
#define HAVE_STRSEP 1
#define HAVE_MKDTEMP 1
#define HAVE_MKTIME 1
#define HAVE_TIMEGM 1
#define HAVE_USLEEP 1
#define HAVE_GETPEEREID 1
#define HAVE_CONNECT 1
#define HAVE_GETHOSTBYNAME 1
#define HAVE_SOCKETPAIR 1
#define HAVE_INET_PTON 1
#define HAVE_INET_NTOP 1
#define HAVE_INET_ATON 1
#define HAVE_INET_NTOA 1
#define HAVE_IPV6 1
#define HAVE_STRUCT_SOCKADDR_STORAGE 1
#define HAVE_STRUCT_SOCKADDR_IN6 1
#define HAVE_SOCKADDR_IN6 1
#define HAVE_STRUCT_ADDRINFO 1
#define HAVE_GETADDRINFO 1
#define HAVE_GETNAMEINFO 1
#define HAVE_FREEADDRINFO 1
#define HAVE_GAI_STRERROR 1
#define HAVE_SOCKLEN_T 1
#define HAVE_ARPA_INET_H 1
#define HAVE_NETINET_IN_H 1
#define HAVE_NETINET_TCP_H 1
#define HAVE_NETINET_IN_SYSTM_H 1
#define HAVE_NETINET_IP_H 1
#define HAVE_SYS_SOCKET_H 1
#define HAVE_SYS_UN_H 1
#define HAVE_UNIXSOCKET 1
#define HAVE_NETDB_H 1
#define HAVE_NET_IF_H 1
#define HAVE_IFADDRS_H 1
#define HAVE_STRUCT_IFADDRS 1
#define HAVE_GETIFADDRS 1
#define HAVE_FREEIFADDRS 1
#define HAVE_SYS_UIO_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_TIME_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_FCNTL_H 1
#define HAVE_DIRENT_H 1
#define HAVE_SYS_SYSLOG_H 1
#define HAVE_SYSLOG_H 1
#define HAVE_SYSLOG 1
#define HAVE_VSYSLOG 1
#define HAVE_STRUCT_TIMESPEC 1
#define HAVE_CLOCK_GETTIME 1
#define HAVE_CLOCK_MONOTONIC 1
#define HAVE_GETTIMEOFDAY_TZ 1
#define HAVE_DLFCN_H 1
#define HAVE_DLOPEN 1
#define HAVE_STRLCPY 1
#define HAVE_STRLCAT 1
#define HAVE_LIBBSD 1
#define HAVE_BSD_STRING_H 1
#define HAVE_SETPROCTITLE 1
#define HAVE_GETPROGNAME 1
#define HAVE_FUNCTION_MACRO 1
#define HAVE_VA_COPY 1
#define HAVE_CONSTRUCTOR_ATTRIBUTE 1
#define HAVE_DESTRUCTOR_ATTRIBUTE 1
#define HAVE_FALLTHROUGH_ATTRIBUTE 1
#define HAVE_IMMEDIATE_STRUCTURES 1
#define HAVE_WORKING_STRERROR_R 1
#define HAVE_SECURE_MKSTEMP 1
#define HAVE_ERRNO_DECL 1
#define HAVE_SIG_ATOMIC_T_TYPE 1
#define HAVE_SYS_IOCTL_H 1
#define HAVE_POLL_H 1
#define HAVE_POLL 1
#define HAVE_PTHREAD 1
#define HAVE_LINUX_TYPES_H 1
#define HAVE_INTPTR_T 1
#define HAVE_UINTPTR_T 1
#define HAVE_PTRDIFF_T 1
#define HAVE_COMPARISON_FN_T 1
#define HAVE_GCC_VISIBILITY_ATTR 1
EOF
    # libbsd's headers are not installed; these are the declarations lib/replace needs.
    cat >"$ref_dir/shim/bsd/string.h" <<'EOF'
#include <stddef.h>
size_t strlcpy(char *dst, const char *src, size_t size);
size_t strlcat(char *dst, const char *src, size_t size);
EOF
    cat >"$ref_dir/shim/bsd/unistd.h" <<'EOF'
#include <unistd.h>
const char *getprogname(void);
void setproctitle(const char *fmt, ...);
EOF
    : >"$ref_dir/shim/standards.h"

    # Our hook: the two settings stock's driver cannot pass.
    cat >"$ref_dir/shim/ipalloc_hook.c" <<'EOF'
#include "replace.h"
#include "system/network.h"
#include <talloc.h>
#include "protocol/protocol.h"
#include "server/ipalloc.h"

struct ipalloc_state *hooked_ipalloc_state_init(TALLOC_CTX *mem_ctx, uint32_t num_nodes,
						enum ipalloc_algorithm algorithm,
						bool no_ip_takeover, bool no_ip_failback,
						uint32_t *force_rebalance_nodes)
{
	const char *failback = getenv("CTDB_SET_NoIPFailback");
	const char *rebalance = getenv("CTDB_TEST_REBALANCE_NODES");

	if (failback != NULL && (uint32_t)strtol(failback, NULL, 0) != 0) {
		no_ip_failback = true;
	}
	if (rebalance != NULL) {
		char *copy = talloc_strdup(mem_ctx, rebalance);
		char *save = NULL;
		char *tok;
		size_t n = 0;

		force_rebalance_nodes = talloc_array(mem_ctx, uint32_t, 0);
		for (tok = strtok_r(copy, ",", &save); tok != NULL;
		     tok = strtok_r(NULL, ",", &save)) {
			force_rebalance_nodes = talloc_realloc(mem_ctx, force_rebalance_nodes,
							       uint32_t, n + 1);
			force_rebalance_nodes[n++] = (uint32_t)strtol(tok, NULL, 0);
		}
	}
	return ipalloc_state_init(mem_ctx, num_nodes, algorithm, no_ip_takeover,
				  no_ip_failback, force_rebalance_nodes);
}
EOF

    (
        set -e
        cd "$ref_dir/bin/default"
        rm -f ./*.o
        local inc="-D__STDC_WANT_LIB_EXT1__=1 -I../../shim -I../../lib/replace -I../../lib/talloc
            -I../../lib/tevent -I../../lib/tdb/include -I../../ctdb/include -I../../ctdb -I../.."
        for f in ctdb/server/ipalloc.c ctdb/server/ipalloc_common.c \
            ctdb/server/ipalloc_deterministic.c ctdb/server/ipalloc_nondeterministic.c \
            ctdb/server/ipalloc_lcp2.c ctdb/common/rb_tree.c ctdb/common/line.c \
            ctdb/protocol/protocol_util.c ctdb/common/logging.c \
            ctdb/tests/src/ipalloc_read_known_ips.c; do
            # shellcheck disable=SC2086
            gcc -O2 -w -c $inc -o "$(basename "$f" .c).o" "../../$f"
        done
        # shellcheck disable=SC2086
        gcc -O2 -w -c $inc -Dipalloc_state_init=hooked_ipalloc_state_init \
            -o ctdb_takeover_tests.o ../../ctdb/tests/src/ctdb_takeover_tests.c
        # shellcheck disable=SC2086
        gcc -O2 -w -c $inc -o ipalloc_hook.o ../../shim/ipalloc_hook.c
        gcc -o ctdb_takeover_tests ./*.o \
            "$libdir/samba/libsamba-debug-samba4.so.0" "$libdir/libsamba-util.so.0" \
            "$libdir/libtalloc.so.2" "$libdir/libtevent.so.0" \
            "$libdir/samba/libreplace-samba4.so.0" "$libdir/samba/libsocket-blocking-samba4.so.0" \
            "$libdir/samba/libsys-rw-samba4.so.0" "$libdir/samba/libtime-basic-samba4.so.0" \
            "$libdir/libbsd.so.0" -Wl,-rpath,"$libdir/samba"
    ) >&2
    echo "$ref_dir/bin/default/ctdb_takeover_tests"
}

# Runs a driver on every stock test vector; prints "passed/total".
check_vectors() {
    local bin=$1 pass=0 total=0 f args envs input expected out
    for f in "$repo"/tests/ipalloc/*.txt; do
        total=$((total + 1))
        args=$(sed -n 's/^args: //p' "$f")
        envs=$(sed -n 's/^env: //p' "$f")
        input=$(sed -n '/^--- input$/,/^--- expected$/p' "$f" | sed '1d;$d')
        expected=$(sed -n '/^--- expected$/,$p' "$f" | sed '1d')
        # shellcheck disable=SC2086
        out=$(printf '%s\n' "$input" | env -u CTDB_TEST_LOGLEVEL -u CTDB_TEST_RUNSTATE \
            -u CTDB_SET_NoIPTakeover -u CTDB_IP_ALGORITHM $envs "$bin" ipalloc $args 2>&1) || true
        if [ "$out" = "$expected" ]; then
            pass=$((pass + 1))
        else
            echo "  vector $(basename "$f") differs" >&2
        fi
    done
    echo "$pass/$total"
}

if [ "${1:-}" = "--build-only" ]; then
    build_reference
    exit 0
fi
cases=${1:-2000}

reference=${CTDB_IPALLOC_REFERENCE:-}
if [ -z "$reference" ]; then
    echo "building stock ctdb_takeover_tests in $ref_dir ..."
    reference=$(build_reference)
fi
[ -x "$reference" ] || die "reference $reference is not executable"

echo "stock reference: $reference"
echo "stock reference on the published test vectors: $(check_vectors "$reference")"

cd "$repo"
cargo build --release --bin ctdb-ipalloc >/dev/null 2>&1
echo "ours on the published test vectors: $(check_vectors "$repo/target/release/ctdb-ipalloc")"

echo "comparing $cases random inputs (plus fixed large cases) ..."
CTDB_IPALLOC_REFERENCE="$reference" CTDB_IPALLOC_REFERENCE_EXTENSIONS=1 \
    CTDB_IPALLOC_DIFF_CASES="$cases" \
    cargo test --test it ipalloc::differential_against_stock_reference \
    -- --nocapture 2>&1 | grep -E "cases identical|differ|panicked|test result" || true

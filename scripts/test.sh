#!/usr/bin/env bash
# The tests, as README.md gives them. Installs the programs the tests drive
# when they are missing and this machine can (apt-get, as root or through
# sudo without a password): Chromium and chromedriver for the chat page,
# systemd-analyze for the unit file, openssl for the TLS guide's
# certificates, curl for README's tour, procps for `kill`, Node and Debian's
# Python with PyJWT for the token examples in docs/authentication.md,
# redis-server for the cluster. Then runs
# `cargo test` with any arguments given, twice: against one process (then,
# without arguments, the JavaScript client's checks and tests), then
# (RC_TEST_CLUSTER=1) with every server the tests start a node of a cluster
# on a real Redis, so that no rule of the protocol differs between them.
#
# A test whose program is still missing fails and says so. To skip those
# tests instead (they then show as ignored), run with SKIP_MISSING_TOOLS=1;
# CI (CI=true) never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
type -P kill >/dev/null || missing+=(procps)   # the program, not bash's builtin
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v redis-server >/dev/null || missing+=(redis-server)
/usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null || missing+=(python3 python3-jwt python3-cryptography)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo)
    else
        sudo=(none)
    fi
    if [ "${sudo[0]:-}" != none ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${missing[*]}" >&2
        "${sudo[@]}" apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null
    else
        echo "test.sh: missing ${missing[*]}, which this script cannot install here: the tests that need" >&2
        echo "test.sh: them will fail (or, with SKIP_MISSING_TOOLS=1, be skipped and shown as ignored)" >&2
    fi
fi
echo "test.sh: the tests against one process" >&2
cargo test "$@"
if [ $# -eq 0 ]; then
    # The JavaScript client: its shipped types are the ones its code gives
    # (regenerated and compared), the documented surface type-checks
    # against them, and its tests run against the server just built, with
    # the library installed from `npm pack`'s tarball.
    echo "test.sh: the JavaScript client (clients/js)" >&2
    (
        cd clients/js
        npm ci --no-audit --no-fund --loglevel=error
        npm run --silent types
        diff -u roomcast.d.ts types/roomcast.d.ts || {
            echo "test.sh: clients/js/roomcast.d.ts is not what the code gives: run npm run types and copy types/roomcast.d.ts" >&2
            exit 1
        }
        npm run --silent check
        RC_BIN="$(pwd)/../../target/debug/roomcast" npm test --silent
    )
fi
echo "test.sh: the same tests against a cluster node (RC_TEST_CLUSTER=1)" >&2
RC_TEST_CLUSTER=1 cargo test "$@"

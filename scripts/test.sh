#!/usr/bin/env bash
# Runs every qqmx test. The tests drive real clients: lettre (a dev-dependency),
# Python's smtplib (python3), swaks and `openssl s_client` (the test CA's checks in
# tests/tls_ca.rs), which this script installs from Debian when they are missing, and
# sign mail with dkimpy (and PyNaCl for Ed25519), installed from PyPI.
# The image test builds and runs the container with podman and runc, also from Debian
# (QQMX_SKIP_IMAGE_TEST=1 skips it). The Postfix test (tests/postfix.rs) relays mail to
# qqmx through a private Postfix instance it starts and stops itself; it needs Debian's
# postfix package, installed here without a system configuration so that no system
# Postfix runs, and root (QQMX_SKIP_POSTFIX_TEST=1 skips it). The Mailpit client test
# (tests/mailpit.rs) drives the API with the npm package mailpit-api, installed here into
# the git-ignored target/mailpit-client with Node.js's npm (QQMX_SKIP_MAILPIT_TEST=1
# skips it). The DNS tests (tests/dns.rs) ask qqmx's DNS server with `dig` (Debian's
# bind9-dnsutils, installed here; QQMX_SKIP_DIG_TEST=1 skips it) and dnspython (from PyPI;
# QQMX_SKIP_DNSPYTHON_TEST=1 skips it); tests/postfix_dns.rs runs Postfix in a mount
# namespace of its own with util-linux's `unshare`, as root (QQMX_SKIP_POSTFIX_TEST=1).
# The dashboard test (tests/dashboard.rs) drives Debian's chromium, headless, through
# chromium-driver (QQMX_SKIP_BROWSER_TEST=1 skips it).
# The Redis tests (tests/redis.rs) start and stop redis-servers (and one
# HAProxy) of their own; they need Debian's redis-server and haproxy packages
# (QQMX_SKIP_REDIS_TEST=1 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v swaks >/dev/null || need_apt+=(swaks)
command -v python3 >/dev/null || need_apt+=(python3)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ -z "${QQMX_SKIP_IMAGE_TEST:-}" ]; then
  command -v podman >/dev/null || need_apt+=(podman)
  command -v runc >/dev/null || need_apt+=(runc)
fi
if [ -z "${QQMX_SKIP_POSTFIX_TEST:-}" ] && ! [ -x /usr/sbin/postfix ]; then
  need_apt+=(postfix)
fi
if [ -z "${QQMX_SKIP_REDIS_TEST:-}" ]; then
  command -v redis-server >/dev/null || need_apt+=(redis-server)
  command -v redis-cli >/dev/null || need_apt+=(redis-tools)
  command -v haproxy >/dev/null || need_apt+=(haproxy)
fi
if [ -z "${QQMX_SKIP_DIG_TEST:-}" ] && ! command -v dig >/dev/null; then
  need_apt+=(bind9-dnsutils)
fi
if [ -z "${QQMX_SKIP_MAILPIT_TEST:-}" ] && ! command -v npm >/dev/null; then
  need_apt+=(nodejs npm)
fi
if [ -z "${QQMX_SKIP_BROWSER_TEST:-}" ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  [ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    # Postfix's installer asks what kind of mail server to set up: none.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "scripts/test.sh: please install ${need_apt[*]} (Debian: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

if ! python3 -c 'import dkim, nacl' 2>/dev/null; then
  user=()
  [ "$(id -u)" = 0 ] || user=(--user)
  python3 -m pip install -q "${user[@]}" 'dkimpy==1.1.8' 'pynacl>=1.5' >&2
fi
if [ -z "${QQMX_SKIP_DNSPYTHON_TEST:-}" ] && ! python3 -c 'import dns.resolver' 2>/dev/null; then
  user=()
  [ "$(id -u)" = 0 ] || user=(--user)
  python3 -m pip install -q "${user[@]}" 'dnspython>=2.6' >&2
fi

if [ -z "${QQMX_SKIP_MAILPIT_TEST:-}" ] && ! [ -f target/mailpit-client/node_modules/mailpit-api/package.json ]; then
  npm install -q --prefix target/mailpit-client --no-audit --no-fund 'mailpit-api@2.1.0' >&2
fi

# --no-fail-fast: report every failing test binary, not only the first; the exit status
# is still non-zero when any test failed.
exec cargo test --all-features --no-fail-fast "$@"

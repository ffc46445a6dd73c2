#!/usr/bin/env bash
# Installs what building and testing distcron needs and is missing on a fresh machine:
# protoc (protobuf-compiler, for etcd-client's build), Debian chromium and npm playwright-core
# (browser tests). Idempotent; prints what it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ "${1:-}" = "--test" ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }

if [ "${1:-}" = "--test" ]; then
  gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
  if ! command -v ferretdb >/dev/null 2>&1 && [ ! -x "$gobin/ferretdb" ]; then
    command -v go >/dev/null 2>&1 || { echo "setup: go not found; install Go to build FerretDB" >&2; exit 1; }
    echo "setup: installing FerretDB v1.24.2 (go install, a few minutes the first time)"
    go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2
  fi
fi

if [ "${1:-}" = "--test" ] && [ ! -d tests/ui/node_modules/playwright-core ]; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm not found; install Node.js (Debian package nodejs + npm)" >&2; exit 1; }
  echo "setup: installing npm playwright-core (tests/ui)"
  (cd tests/ui && npm ci --no-audit --no-fund --silent)
fi

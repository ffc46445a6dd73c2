#!/usr/bin/env bash
# Runs every distcron test on a fresh machine: installs what is missing, then the Rust unit
# tests, the integration test binary (real distcron processes over HTTP) and the browser tests
# (Debian chromium driven by playwright-core).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# FerretDB is installed by `go install` into GOPATH/bin.
PATH="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin:$PATH"
export PATH

echo "== layering: backend crates stay in src/backend"
if grep -rnE '\b(etcd_client|mongodb|rusqlite)::' src/actors src/http src/domain; then
  echo "error: a storage crate is named outside src/backend" >&2; exit 1
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy (warnings are errors) while building every target for the tests"
# clippy-driver wraps rustc for this crate only (RUSTC_WORKSPACE_WRAPPER): our code is linted as it
# is compiled for the tests, and the dependencies are compiled once. `cargo clippy` would first
# compile every dependency a second time in check mode (9 of CI's 22 minutes). The lints and
# targets are the same as `cargo clippy --all-targets -- -D warnings` (which still works by hand).
command -v clippy-driver >/dev/null 2>&1 || { echo "error: clippy-driver not found (rustup component add clippy)" >&2; exit 1; }
RUSTC_WORKSPACE_WRAPPER="$(pwd)/scripts/clippy-wrapper"
export RUSTC_WORKSPACE_WRAPPER
cargo test --locked --all-targets --no-run
# `cargo test` builds the library, the binary the integration and browser tests start, and the
# test targets (above, with the benches, which are run in release by hand: README "Benchmarks").
echo "== cargo test (unit + integration; every response the integration tests get is recorded)"
recorded="$(pwd)/target/openapi/responses.jsonl"
mkdir -p "$(dirname "$recorded")" && rm -f "$recorded"
DISTCRON_RECORD_RESPONSES="$recorded" cargo test --locked -- --test-threads="${DISTCRON_TEST_THREADS:-4}" --skip nemesis::
echo "== nemesis quick profile (alone: its lateness bound must not measure the other tests' load)"
cargo test --locked --test it nemesis:: -- --test-threads=1
echo "== OpenAPI: the document (openapi-spec-validator) and every recorded response against it"
"${DISTCRON_OPENAPI_VENV:-$HOME/.cache/distcron/openapi-venv}/bin/python" scripts/openapi_check.py --records "$recorded"
echo "== browser tests (chromium + playwright-core)"
DISTCRON_BIN="$(pwd)/target/debug/distcron" node --test tests/ui/

#!/usr/bin/env bash
# Builds and runs one distcron node with role `all` and embedded stores on
# http://127.0.0.1:8070 (data in ./data). Extra arguments go to distcron.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --release
exec target/release/distcron --config config.toml "$@"

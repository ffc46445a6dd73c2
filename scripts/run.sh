#!/usr/bin/env bash
# Builds and runs one distcron node with role `all` and embedded stores on
# http://127.0.0.1:8070 (data in ./data). Extra arguments go to distcron.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --release
# Authentication is on: the first start writes a token into data/api_token (mode 0600).
echo "distcron: the API token is in data/api_token once started (TOKEN=\$(cat data/api_token))" >&2
exec target/release/distcron --config config.toml "$@"

#!/usr/bin/env bash
# The test command: formatting, lints, every test, the doc-tests, and the docs,
# with warnings refused everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "tests"
cargo nextest run --workspace --all-features --no-fail-fast

step "doc-tests"
cargo test --workspace --all-features --doc

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

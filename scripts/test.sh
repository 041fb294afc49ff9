#!/usr/bin/env bash
# The test command: sets up what is missing (scripts/setup.sh), then formatting,
# lints, every test, the doc-tests, and the docs, with warnings refused everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# Integration tests run real servers in Docker; no Docker is a failure, not a skip.
step "setup"
setup=$(scripts/setup.sh)
eval "$setup"
# Test containers are shared by the run's test processes and removed at its end.
export DLOCK_TEST_RUN="${DLOCK_TEST_RUN:-run-$$-$(date +%s)}"
cleanup() {
    local ids
    ids=$(docker ps -aq --filter "label=dlock.test=$DLOCK_TEST_RUN")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
}
trap cleanup EXIT

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

step "each backend feature on its own"
# A user who enables one backend gets a facade that builds with it alone, and the
# CLI likewise.
for feature in memory redis redlock etcd; do
    cargo check --quiet -p dlock-rs --no-default-features --features "$feature"
done
cargo check --quiet -p dlock-cli --no-default-features --features redis

step "alert rules and exported metrics (promtool)"
promtool check rules docs/alerts.yml
(cd docs && promtool test rules alerts.test.yml)
cargo run --quiet -p dlock-e2e --example prometheus -- --once | promtool check metrics

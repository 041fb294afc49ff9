#!/usr/bin/env bash
# Sets up what the tests need and is missing, then prints the environment to use:
#
#   eval "$(scripts/setup.sh)"
#
# - rustfmt, clippy (rustup) and cargo-nextest (cargo install);
# - protoc and its well-known types, for etcd-client's build (apt);
# - promtool, from Debian's prometheus package, for the alert rules (apt);
# - DejaVu Sans (fonts-dejavu-core), for the plots of the bench report (apt);
# - a running Docker engine (checked, never installed);
# - the server images: DLOCK_REDIS_IMAGE / DLOCK_ETCD_IMAGE if set; else the official
#   images if present or pullable within 10 s; else local images built from Debian's
#   packages by scripts/test-images.sh (which installs redis-server and etcd-server).
#
# Progress goes to stderr; stdout carries only the `export` line. Whatever cannot be
# set up stops the script at once with one line saying what is missing and how to
# get it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }
fail() { echo "setup: error: $*" >&2; exit 1; }

# Runs apt-get as root, or through sudo; fails with the command to run otherwise.
apt_install() {
    local as=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null && sudo -n true 2>/dev/null \
            || fail "missing $*: run 'sudo apt-get install $*' (or install them another way), then run this again"
        as=(sudo -n)
    fi
    command -v apt-get >/dev/null \
        || fail "missing $*: this machine has no apt-get; install them with its package manager"
    say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    "${as[@]}" apt-get update -qq >&2 || fail "apt-get update failed: no package index for $*"
    "${as[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&2 || fail "apt-get install $* failed"
}

command -v cargo >/dev/null || fail "cargo is missing: install a Rust toolchain with rustup"
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || fail "$component is missing and there is no rustup to add it"
        say "adding the $component component"
        rustup component add "$component" >&2 || fail "rustup component add $component failed"
    fi
done
if ! command -v cargo-nextest >/dev/null; then
    say "installing cargo-nextest (cargo install, a few minutes)"
    cargo install cargo-nextest --locked >&2 || fail "cargo install cargo-nextest failed"
fi
# protoc, and the well-known types etcd's protos import (google/protobuf/*.proto,
# in libprotobuf-dev: only a Recommends of protobuf-compiler, so a bare install of
# the compiler fails etcd-client's build with "descriptor.proto: File not found").
if [ -z "${PROTOC:-}" ]; then
    if ! command -v protoc >/dev/null || [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then
        apt_install protobuf-compiler libprotobuf-dev
    fi
fi
# promtool, for checking the alert rules and the metrics the example exports.
command -v promtool >/dev/null || apt_install prometheus
# The font the bench harness's report plots with (ab_glyph reads it; no font library).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_install fonts-dejavu-core
command -v docker >/dev/null || fail "docker is missing: the integration tests run real servers in Docker"
docker info >/dev/null 2>&1 \
    || fail "the Docker engine is not reachable: start it (for example 'systemctl start docker') and check 'docker info'"

# An image the tests can use without a registry: present already, or pulled in 10 s.
usable() {
    docker image inspect "$1" >/dev/null 2>&1 && return 0
    say "pulling $1 (10 s at most)"
    timeout 10 docker pull -q "$1" >/dev/null 2>&1
}

# The defaults testkit uses when the variables are unset.
official_redis=redis:7
official_etcd=gcr.io/etcd-development/etcd:v3.5.17
redis_image=${DLOCK_REDIS_IMAGE:-}
etcd_image=${DLOCK_ETCD_IMAGE:-}
if [ -n "$redis_image" ]; then
    usable "$redis_image" || fail "DLOCK_REDIS_IMAGE=$redis_image is neither present nor pullable"
fi
if [ -n "$etcd_image" ]; then
    usable "$etcd_image" || fail "DLOCK_ETCD_IMAGE=$etcd_image is neither present nor pullable"
fi
if [ -z "$redis_image" ] && usable "$official_redis"; then redis_image=$official_redis; fi
if [ -z "$etcd_image" ] && usable "$official_etcd"; then etcd_image=$official_etcd; fi
if [ -z "$redis_image" ] || [ -z "$etcd_image" ]; then
    say "no registry reachable: building local images from Debian's packages"
    command -v redis-server >/dev/null && command -v etcd >/dev/null \
        || apt_install redis-server etcd-server
    eval "$(scripts/test-images.sh --env)"
    redis_image=${redis_image:-$DLOCK_REDIS_IMAGE}
    etcd_image=${etcd_image:-$DLOCK_ETCD_IMAGE}
fi
say "images: $redis_image, $etcd_image"
echo "export DLOCK_REDIS_IMAGE=$redis_image DLOCK_ETCD_IMAGE=$etcd_image"

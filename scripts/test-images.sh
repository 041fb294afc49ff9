#!/usr/bin/env bash
# Builds the local test images the integration tests start with testcontainers,
# from Debian's own binaries: no registry is needed. Each image is FROM scratch with
# the server binary, the libraries `ldd` lists, and CMD set to the server (no
# entrypoint), so the tests' command lines work with the official images too.
#
#   scripts/test-images.sh            # builds dlock-test/redis:local, dlock-test/etcd:local
#   eval "$(scripts/test-images.sh --env)"   # also prints the env vars to use them
set -euo pipefail

REDIS_IMAGE=dlock-test/redis:local
ETCD_IMAGE=dlock-test/etcd:local

need() {
    local missing=()
    for bin in "$@"; do command -v "$bin" >/dev/null || missing+=("$bin"); done
    if ((${#missing[@]})); then
        echo "missing ${missing[*]}: install Debian's redis-server and etcd-server (scripts/setup.sh does)" >&2
        exit 1
    fi
}

# Copies the binary $bin to $root$dest, and every library it links to its own path.
stage() {
    local root=$1 bin=$2 dest=$3
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$bin" "$root$dest"
    ldd "$bin" | grep -oE '/[^ ]+' | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# Builds $image holding $bin as $dest (a writable /tmp and /data beside it).
build() {
    local image=$1 bin=$2 dest=$3 cmd=$4
    local dir
    dir=$(mktemp -d)
    stage "$dir/root" "$bin" "$dest"
    mkdir -p "$dir/root/tmp" "$dir/root/data"
    printf 'FROM scratch\nCOPY root/ /\nCMD %s\n' "$cmd" >"$dir/Dockerfile"
    # The legacy builder warns that it is deprecated; the build itself is what matters.
    docker build -q -t "$image" "$dir" >/dev/null 2>"$dir/log" || { cat "$dir/log" >&2; exit 1; }
    rm -rf "$dir"
}

command -v docker >/dev/null || { echo "docker is not installed: the integration tests need it" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the docker engine is not reachable" >&2; exit 1; }
need redis-server etcd

# Debian's redis-server is a link to a multi-call binary that picks its mode from
# its name, so the copy is named redis-server.
build "$REDIS_IMAGE" /usr/bin/redis-server /usr/bin/redis-server \
    '["/usr/bin/redis-server", "--protected-mode", "no", "--bind", "0.0.0.0"]'
build "$ETCD_IMAGE" /usr/bin/etcd /usr/bin/etcd \
    '["/usr/bin/etcd", "--data-dir", "/tmp/etcd", "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://127.0.0.1:2379"]'

echo "built $REDIS_IMAGE and $ETCD_IMAGE" >&2
if [ "${1:-}" = --env ]; then
    echo "export DLOCK_REDIS_IMAGE=$REDIS_IMAGE DLOCK_ETCD_IMAGE=$ETCD_IMAGE"
fi

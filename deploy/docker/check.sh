#!/usr/bin/env bash
# Tests the container image's path without a Docker engine:
#
#   1. the Dockerfile's build command, its Rust version (rust-toolchain.toml's)
#      and its health check are the ones this script runs;
#   2. the build context is copied as `docker build` would send it (the
#      repository less .dockerignore) and the release binary is built there
#      with the Dockerfile's command, `cargo build --release --locked -p floodgate`;
#   3. the binary needs only shared libraries that gcr.io/distroless/cc-debian12
#      has, at glibc and libstdc++ symbol versions Debian 12 has;
#   4. the binary runs as the image runs it: the image's config
#      (deploy/docker/floodgate.toml), the image's environment only, its
#      non-root uid 65532, a working directory of its own; `floodgate health`
#      (the image's HEALTHCHECK) says ready, a chat request through the
#      built-in mock provider answers, and SIGTERM ends it with exit 0.
#
# Environment:
#   CARGO_TARGET_DIR          the release build's target directory
#                             (default: target/docker-check/target)
#   FLOODGATE_SKIP_RELEASE_BUILD=1
#                             skip step 2 and check FLOODGATE_BIN instead
#                             (default target/debug/floodgate): for CI, where a
#                             cold release build would add minutes
#   FLOODGATE_BIN             the binary to check when the build is skipped
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
work="$repo/target/docker-check"
mkdir -p "$work"
started=$(date +%s)
say() { echo "docker-check: $*"; }
die() { echo "docker-check: FAILED: $*" >&2; exit 1; }

# --- 1. The Dockerfile says what this script does -----------------------------
build_command='cargo build --release --locked -p floodgate'
grep -q -- "$build_command" Dockerfile || die "the Dockerfile does not build with '$build_command'"
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
dockerfile_rust=$(sed -n 's/^ARG RUST_VERSION=\(.*\)/\1/p' Dockerfile)
[ "$toolchain" = "$dockerfile_rust" ] \
  || die "the Dockerfile builds with Rust $dockerfile_rust, rust-toolchain.toml says $toolchain"
grep -q '^FROM rust:${RUST_VERSION}-bookworm AS build' Dockerfile \
  || die "the build stage is not rust:\${RUST_VERSION}-bookworm (Debian 12, as the runtime image)"
grep -q '^FROM gcr.io/distroless/cc-debian12:nonroot' Dockerfile \
  || die "the runtime stage is not gcr.io/distroless/cc-debian12:nonroot"
grep -q 'CMD \["/usr/local/bin/floodgate", "health"' Dockerfile \
  || die "the HEALTHCHECK does not run floodgate health"
say "Dockerfile: Rust $toolchain, '$build_command', distroless/cc-debian12, HEALTHCHECK floodgate health"

# --- 2. The release build, from the build context -------------------------------
if [ "${FLOODGATE_SKIP_RELEASE_BUILD:-0}" = 1 ]; then
  bin="${FLOODGATE_BIN:-target/debug/floodgate}"
  [ -x "$bin" ] || die "FLOODGATE_SKIP_RELEASE_BUILD=1 but $bin is not built"
  say "release build skipped (FLOODGATE_SKIP_RELEASE_BUILD=1); checking $bin"
else
  python3 deploy/docker/context.py "$repo" "$work/context"
  target_dir="${CARGO_TARGET_DIR:-$work/target}"
  build_started=$(date +%s)
  say "(cd <context> && $build_command), CARGO_TARGET_DIR=$target_dir"
  (cd "$work/context" && CARGO_TARGET_DIR="$target_dir" RUSTUP_TOOLCHAIN="$toolchain" \
    CARGO_TERM_COLOR=never $build_command)
  say "release build: $(( $(date +%s) - build_started )) s"
  bin="$target_dir/release/floodgate"
fi
bin=$(readlink -f "$bin")
say "binary: $bin ($(( $(stat -c %s "$bin") / 1048576 )) MiB)"

# --- 3. Shared libraries ------------------------------------------------------
# gcr.io/distroless/cc-debian12 is distroless/base-debian12 (glibc: libc,
# libm, libmvec, libpthread, libdl, librt, the loader; libssl3) plus
# libgcc-s1, libgomp1 and libstdc++6 (the cc image's package list).
allowed="libc.so.6 libm.so.6 libmvec.so.1 libpthread.so.0 libdl.so.2 librt.so.1
ld-linux-x86-64.so.2 ld-linux-aarch64.so.1 libgcc_s.so.1 libstdc++.so.6 libgomp.so.1
libssl.so.3 libcrypto.so.3"
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[ -n "$needed" ] || die "readelf found no NEEDED entries in $bin"
for library in $needed; do
  grep -qxF "$library" <<<"$(tr ' ' '\n' <<<"$allowed")" \
    || die "$bin needs $library, which distroless/cc-debian12 does not have"
done
say "NEEDED: $(echo $needed) (all in distroless/cc-debian12)"
# Every library resolves here (ldd), and no symbol needs a newer glibc
# (Debian 12: 2.36) or libstdc++ (GCC 12: GLIBCXX_3.4.30) than Debian 12's.
if ldd "$bin" | grep -q 'not found'; then die "$(ldd "$bin" | grep 'not found')"; fi
version_max() {
  readelf -V "$bin" | grep -o "$1_[0-9.]*" | sed "s/$1_//" | sort -uV | tail -1
}
glibc=$(version_max GLIBC)
glibcxx=$(version_max GLIBCXX)
[ "$(printf '%s\n2.36\n' "$glibc" | sort -V | tail -1)" = 2.36 ] \
  || die "$bin needs GLIBC_$glibc; Debian 12 has 2.36"
if [ -n "$glibcxx" ]; then
  [ "$(printf '%s\n3.4.30\n' "$glibcxx" | sort -V | tail -1)" = 3.4.30 ] \
    || die "$bin needs GLIBCXX_$glibcxx; Debian 12 has 3.4.30"
fi
say "symbol versions: GLIBC_$glibc, GLIBCXX_${glibcxx:-none} (Debian 12: 2.36, 3.4.30)"

# --- 4. Run it as the image does ---------------------------------------------
# The image's filesystem, in miniature: the binary, the config, a working
# directory that only uid 65532 may write. Under /tmp, so that uid 65532 can
# reach it wherever the repository is.
root=$(mktemp -d /tmp/floodgate-image.XXXXXX)
chmod 0755 "$root"
install -d "$root/usr/local/bin" "$root/etc/floodgate" "$root/var/lib/floodgate"
install -m 0755 "$bin" "$root/usr/local/bin/floodgate"
install -m 0644 deploy/docker/floodgate.toml "$root/etc/floodgate/floodgate.toml"
as_image_user=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  chown 65532:65532 "$root/var/lib/floodgate"
  chmod 0750 "$root/var/lib/floodgate"
  as_image_user=("$(command -v setpriv)" --reuid 65532 --regid 65532 --clear-groups)
  # The path down to the copy must be traversable by uid 65532.
  for dir in "$root/usr" "$root/usr/local" "$root/usr/local/bin" "$root/etc" \
             "$root/etc/floodgate" "$root/var" "$root/var/lib"; do chmod 0755 "$dir"; done
fi
# The image's config listens on 0.0.0.0:8080; a shared machine may have 8080
# taken, so only the port changes (FLOODGATE_LISTEN, the documented override):
# still every interface, so the non-loopback safety rule (a master key) holds.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
master="fg-check-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
log="$work/serve.log"
# The image's environment: PATH, HOME, FLOODGATE_LOG (Dockerfile ENV) and what
# a user passes (-e FLOODGATE_MASTER_KEY); nothing inherited from this shell.
(cd "$root/var/lib/floodgate" && exec env -i PATH=/usr/local/bin HOME=/home/nonroot \
  FLOODGATE_LOG=info FLOODGATE_MASTER_KEY="$master" FLOODGATE_LISTEN="0.0.0.0:$port" \
  "${as_image_user[@]}" "$root/usr/local/bin/floodgate" serve --config "$root/etc/floodgate/floodgate.toml") \
  >"$log" 2>&1 &
pid=$!
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$root"; }
trap cleanup EXIT
health=("$root/usr/local/bin/floodgate" health --url "http://127.0.0.1:$port" --timeout 3s)
deadline=$(( $(date +%s) + 30 ))
until line=$("${health[@]}" 2>&1); do
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "floodgate exited before it was ready"; }
  [ "$(date +%s)" -lt "$deadline" ] || { cat "$log" >&2; die "not ready after 30 s: $line"; }
  sleep 0.2
done
say "$line"
grep -q '"floodgate listening' "$log" || die "no JSON 'floodgate listening' line in the log"
if [ -n "${as_image_user[*]}" ]; then
  owner=$(stat -c %u "$root/var/lib/floodgate/floodgate.db")
  [ "$owner" = 65532 ] || die "floodgate.db belongs to uid $owner, not the image's 65532"
  say "running as uid 65532; floodgate.db written in the working directory"
fi
answer=$(python3 - "$port" "$master" <<'EOF'
import json, sys, urllib.request
port, key = sys.argv[1], sys.argv[2]
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/chat/completions",
    data=json.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
)
with urllib.request.urlopen(request, timeout=10) as response:
    body = json.load(response)
    print(response.status, response.headers["x-floodgate-provider"], len(body["choices"][0]["message"]["content"]))
EOF
) || die "the chat request failed"
say "chat through the built-in mock: $answer"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" = 0 ] || { cat "$log" >&2; die "exit $status after SIGTERM"; }
grep -q 'draining in-flight requests' "$log" || die "no drain line in the log"
if "${health[@]}" >/dev/null 2>&1; then die "floodgate health says ready with the node stopped"; fi
say "SIGTERM: drained and exited 0; floodgate health now exits 1"
say "ok ($(( $(date +%s) - started )) s)"

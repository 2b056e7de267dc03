#!/usr/bin/env bash
# Installs everything the build, the demo and the tests need on a fresh Debian 12
# machine, and nothing when it is already there (idempotent; seconds on a
# prepared machine). Called by ./x before every command.
#
#  - Debian packages the tests, demo and benchmarks use (bpftool: the control-plane
#    benchmark reads the maps' kernel memory with it);
#  - the pinned stable toolchain (rust-toolchain.toml) with rustfmt and clippy;
#  - the pinned nightly for the eBPF crate (proxy-ebpf/rust-toolchain.toml) with rust-src
#    and clippy (`cargo xtask test` lints the kernel code for its bpf target);
#  - bpf-linker, built against that nightly's own LLVM (Debian has no LLVM 23);
#  - cargo-nextest, the test runner (one process per test, which namespace tests need);
#  - cargo-fuzz, which builds and runs the fuzz targets (`./x fuzz`) with the nightly;
#  - kubernetes-validate, the offline schema check of deploy/ (a virtualenv in
#    .cache/, versions pinned in scripts/kubernetes-validate.txt);
#  - podman, buildah and runc (`./x image`, and the test that runs the
#    DaemonSet's pod), with their containers.conf in .cache/containers/ (never
#    /etc; ./x exports CONTAINERS_CONF to it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export PATH="$CARGO_HOME/bin:$PATH"
BPF_LINKER_VERSION=0.13.0
CARGO_FUZZ_VERSION=0.13.2
DEBIAN_PACKAGES=(iproute2 util-linux procps ca-certificates iptables nftables python3-venv bpftool
  podman buildah runc catatonit)

log() { printf 'setup: %s\n' "$*" >&2; }
channel() { sed -n 's/^channel *= *"\(.*\)"/\1/p' "$1"; }
STABLE=$(channel "$ROOT/rust-toolchain.toml")
NIGHTLY=$(channel "$ROOT/proxy-ebpf/rust-toolchain.toml")

# 1. Debian packages.
missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Toolchains (RUSTUP_AUTO_INSTALL=0 here, so install explicitly).
command -v rustup >/dev/null || { log "rustup is required (https://rustup.rs)"; exit 1; }
has_component() { rustup component list --installed --toolchain "$1" 2>/dev/null | grep -q "^$2"; }
if ! has_component "$STABLE" rustfmt || ! has_component "$STABLE" clippy; then
  log "installing Rust $STABLE"
  rustup toolchain install "$STABLE" --profile minimal -c rustfmt,clippy
fi
if ! has_component "$NIGHTLY" rust-src || ! has_component "$NIGHTLY" clippy; then
  log "installing Rust $NIGHTLY with rust-src and clippy (for the eBPF target)"
  rustup toolchain install "$NIGHTLY" --profile minimal -c rust-src,clippy
fi

# 3. bpf-linker against the nightly's libLLVM. The binary keeps an rpath to
#    $PREFIX/lib, so PREFIX lives under CARGO_HOME, not /tmp.
SYSROOT=$(rustc "+$NIGHTLY" --print sysroot)
LLVM_SO=$(find "$SYSROOT/lib" -maxdepth 1 -name 'libLLVM.so.*' | head -n 1)
[ -n "$LLVM_SO" ] || { log "no libLLVM.so.* in $SYSROOT/lib"; exit 1; }
PREFIX="$CARGO_HOME/bpf-linker-llvm"
STAMP="$PREFIX/stamp"
WANT="bpf-linker $BPF_LINKER_VERSION against $(basename "$LLVM_SO")"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! bpf-linker --version >/dev/null 2>&1; then
  log "building $WANT (about a minute)"
  mkdir -p "$PREFIX/lib"
  ln -sf "$LLVM_SO" "$PREFIX/lib/libLLVM.so"
  ln -sf "$LLVM_SO" "$PREFIX/lib/$(basename "$LLVM_SO")"
  LLVM_PREFIX="$PREFIX" cargo "+$STABLE" install bpf-linker --version "$BPF_LINKER_VERSION" --locked --force
  echo "$WANT" > "$STAMP"
fi

# 4. The test runner.
if ! cargo "+$STABLE" nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo "+$STABLE" install cargo-nextest --locked
fi

# 4b. The fuzzer's driver (cargo-fuzz; the targets build with the nightly).
if [ "$(cargo "+$STABLE" fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo "+$STABLE" install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# 5. The manifests' schema validator, in its own virtualenv (Debian's Python
#    refuses pip installs outside one). Debian's python3, not whatever
#    `python3` is first on PATH, so every machine builds the same venv.
VENV="$ROOT/.cache/kubernetes-validate"
REQUIREMENTS="$ROOT/scripts/kubernetes-validate.txt"
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt" || ! "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  log "installing kubernetes-validate into $VENV"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi

# 6. The container engine's settings, for this project only. cgroups here are
#    hybrid (v1 + v2), which crun refuses: runc. podman's default ulimits are
#    above what these machines allow raising to: pin them.
CONTAINERS_CONF_FILE="$ROOT/.cache/containers/containers.conf"
WANT_CONF='# Written by scripts/setup.sh; selected through CONTAINERS_CONF (./x).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'
if [ "$(cat "$CONTAINERS_CONF_FILE" 2>/dev/null)" != "$WANT_CONF" ]; then
  log "writing $CONTAINERS_CONF_FILE"
  mkdir -p "$(dirname "$CONTAINERS_CONF_FILE")"
  printf '%s\n' "$WANT_CONF" > "$CONTAINERS_CONF_FILE"
fi

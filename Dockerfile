# The proxy's container image: `docker build -t REGISTRY/ebpf-proxy:TAG .` (or
# podman, buildah, kaniko: any OCI builder; no BuildKit-only syntax, every base
# image named in full).
#
# The build stage runs the README's own commands, nothing else: scripts/setup.sh
# installs the pinned toolchains (stable, and the nightly with rust-src for the
# eBPF target), bpf-linker built against the nightly's LLVM, and the packages
# the tools need; `cargo xtask build --release` builds target/release/proxy with
# the eBPF object embedded. tests/tests/deploy.rs checks that these RUN lines
# are exactly those commands, and CI runs the same commands (.ci/run).
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
# The toolchains first, in their own layer: it changes only with these files.
COPY rust-toolchain.toml ./
COPY proxy-ebpf/rust-toolchain.toml proxy-ebpf/
COPY scripts/ scripts/
RUN scripts/setup.sh
COPY . .
RUN cargo xtask build --release

# The runtime stage: the binary and the C runtime it links (glibc, libgcc), no
# shell, no package manager. Debian 12, as the build stage, so the glibc matches.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/proxy /usr/local/bin/proxy
ENTRYPOINT ["/usr/local/bin/proxy"]
CMD ["run"]

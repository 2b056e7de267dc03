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

# The runtime stage: FROM scratch, so nothing to pull and nothing but what is
# copied here: the binary and the C runtime it links (the dynamic loader, glibc,
# libm, libgcc_s), taken from the build stage, so they match the glibc the
# binary was linked against; and the CA bundle, without which the Kubernetes
# client refuses to start ("No CA certificates were loaded from the system",
# found by tests/tests/runtime_pod.rs). No shell, no package manager. Every file
# is root's and read-only to others; the DaemonSet also mounts it read-only.
# `./x image` builds this stage with buildah from the same lines, with the
# `--from=build` files taken from a release build on a Debian 12 machine.
FROM scratch
COPY --from=build /lib64/ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2
COPY --from=build /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libc.so.6
COPY --from=build /lib/x86_64-linux-gnu/libm.so.6 /lib/x86_64-linux-gnu/libm.so.6
COPY --from=build /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libgcc_s.so.1
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/release/proxy /usr/local/bin/proxy
LABEL org.opencontainers.image.title="ebpf-proxy" \
      org.opencontainers.image.description="eBPF Kubernetes service proxy (a kube-proxy replacement), run as a DaemonSet" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="scratch"
ENTRYPOINT ["/usr/local/bin/proxy"]
CMD ["run"]

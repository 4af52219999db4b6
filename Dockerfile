# syntax=docker/dockerfile:1
#
# Floodgate's container image: the release binary on distroless/cc (glibc,
# libgcc_s, libstdc++, CA certificates; no shell, no package manager), run
# as the image's non-root user. deploy/docker/check.sh builds the binary
# with the same cargo command, checks that it needs only the libraries this
# runtime image has, and runs it with this image's config and environment;
# deploy/validate.sh lints this file with hadolint. docs/deployment.md
# tells how to run it.

# The Rust release of rust-toolchain.toml (check.sh fails when they differ).
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
# The image's toolchain, not rust-toolchain.toml's components (no download at build time).
ARG RUST_VERSION
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p floodgate \
    && install -D -m 0755 target/release/floodgate /out/usr/local/bin/floodgate \
    && install -d -m 0750 -o 65532 -g 65532 /out/var/lib/floodgate

# Debian 12, as the build stage, so the binary's glibc symbols are all there.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="floodgate" \
      org.opencontainers.image.description="One binary between an AI app, its users and the LLM providers." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/usr/local/bin/floodgate /usr/local/bin/floodgate
COPY --from=build --chown=65532:65532 /out/var/lib/floodgate /var/lib/floodgate
COPY deploy/docker/floodgate.toml /etc/floodgate/floodgate.toml
# The SQLite store, the SQLite job queue and the ledger's spill file (paths
# relative to the working directory); with PostgreSQL and Redis only the
# spill file is written here.
WORKDIR /var/lib/floodgate
VOLUME ["/var/lib/floodgate"]
# distroless's nonroot user (uid and gid 65532).
USER 65532:65532
ENV FLOODGATE_LOG=info
EXPOSE 8080
# Ready means 200 from /health/ready (503 while draining or when the state
# backend does not answer). `floodgate health` is the image's curl.
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/floodgate", "health", "--url", "http://127.0.0.1:8080", "--timeout", "3s"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/floodgate"]
CMD ["serve", "--config", "/etc/floodgate/floodgate.toml"]

# syntax=docker/dockerfile:1.7
# pullsecret-injector: a static (musl) release build on distroless/static, running as
# 65532:65532 with nothing but the binary, suited to readOnlyRootFilesystem.
#
#   docker build -t registry.example.com/platform/pullsecret-injector:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# Set by BuildKit for the platform being built (the builder runs on that platform).
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The distro is pinned by the base image tag; musl-tools is only the musl C toolchain for ring.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
# Every token source cloud (docs/tokens.md) is built in: the default features, named so the
# image keeps them whatever the defaults become.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && export "CC_${target//-/_}=musl-gcc" \
 && cargo build --release --locked --bin pullsecret-injector --features ecr,google,azure --target "$target" \
 && install -D -m 0755 "target/$target/release/pullsecret-injector" /out/pullsecret-injector

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pullsecret-injector /usr/local/bin/pullsecret-injector
USER 65532:65532
# 8443: HTTPS /mutate; 8080: /healthz, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/pullsecret-injector", "serve"]

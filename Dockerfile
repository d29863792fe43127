# spool: a caching media streaming proxy.
#
#   docker build -t spool .          (or: docker compose up -d, see README.md)
#   docker run -p 8080:8080 -v spool-cache:/cache spool
#
# Two stages: the build stage compiles a release binary, the runtime stage is
# Debian slim with the binary, CA certificates and nothing else.

FROM docker.io/library/rust:1-bookworm AS build
# Leave unset. Set to true to build without network access from a crate
# registry mounted at /usr/local/cargo/registry (spool's container test does).
ARG CARGO_NET_OFFLINE
WORKDIR /src

# Dependencies first, in their own layer: built against a stub main, so an
# edit to spool's sources does not compile every crate again.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin spool \
 && rm -rf src

COPY src ./src
COPY migrations ./migrations
# COPY keeps the files' own times, which may be older than the stub's build.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin spool \
 && install -D -m 0755 target/release/spool /out/spool

FROM docker.io/library/debian:bookworm-slim
LABEL org.opencontainers.image.title="spool" \
      org.opencontainers.image.description="A caching media streaming proxy: byte-range requests answered from a progressive, SQLite-indexed chunk cache" \
      org.opencontainers.image.licenses="MIT"
# CA certificates for https origins; nothing else (spool healthcheck needs no curl).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 spool \
 && useradd --system --uid 10001 --gid spool --home-dir /cache --no-create-home --shell /usr/sbin/nologin spool \
 && mkdir -p /cache \
 && chown spool:spool /cache \
 && chmod 0750 /cache
COPY --from=build /out/spool /usr/local/bin/spool

# Media on 8080; the control plane (status page, admin API, metrics,
# signing) on 8081, which compose publishes on the host's loopback only.
ENV SPOOL_LISTEN=0.0.0.0:8080 \
    SPOOL_ADMIN_LISTEN=0.0.0.0:8081 \
    SPOOL_CACHE_DIR=/cache \
    SPOOL_SECRET_FILE=/cache/secret.key
# The cache (chunks, index, key file): keep it on a volume.
VOLUME ["/cache"]
EXPOSE 8080 8081
USER 10001:10001
WORKDIR /cache
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["spool", "healthcheck"]
# spool finishes running streams for up to --shutdown-timeout (10s) on SIGTERM.
STOPSIGNAL SIGTERM
ENTRYPOINT ["spool"]
CMD ["serve"]

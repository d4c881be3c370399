# Sluice: one binary on a slim base, run as an unprivileged user.
#
# The default run is `sluice serve` reading /etc/sluice/sluice.toml (docker/standalone.toml:
# the API on port 8080 of every interface, the SQLite store and its embedded queue in
# /var/lib/sluice, where a volume belongs, the simulator for providers). Mount another file
# there for another set-up. The processes of a cluster run `serve --no-workers` and
# `worker --health-listen 0.0.0.0:8090` (docs/deployment.md). The build context is only
# what .dockerignore lets through.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid sluice --home-dir /var/lib/sluice --shell /usr/sbin/nologin sluice \
    && install -d -o sluice -g sluice /var/lib/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY docker/standalone.toml /etc/sluice/sluice.toml
ENV SLUICE_CONFIG=/etc/sluice/sluice.toml
USER sluice
WORKDIR /var/lib/sluice
EXPOSE 8080
# `sluice probe` asks the API's readiness (queue and store) with the binary's own HTTP client:
# the image has no curl. A worker-only container overrides this with its --health-listen port.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 \
    CMD ["sluice", "probe", "--timeout", "5s", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["sluice"]
CMD ["serve"]

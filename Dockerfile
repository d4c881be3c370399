# Sluice: one static-ish binary on a slim base.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY sluice.example.toml /etc/sluice/sluice.toml
WORKDIR /var/lib/sluice
EXPOSE 8080
ENTRYPOINT ["sluice"]
CMD ["serve"]

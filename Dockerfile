# Placeholder until the deployment issue: a plain multi-stage build of the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 dealsync
COPY --from=build /src/target/release/dealsync /usr/local/bin/dealsync
USER 10001
ENTRYPOINT ["/usr/local/bin/dealsync"]
CMD ["sync"]

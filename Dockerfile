# syntax=docker/dockerfile:1
# Build:  docker build --build-arg DEALSYNC_GIT_REV=$(git rev-parse --short=12 HEAD) -t dealsync .
# Run:    docker run --rm --env-file config/example.env dealsync sync

# Dependencies are compiled in their own layer (cargo-chef), so a source change rebuilds only dealsync.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.71
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --no-default-features --recipe-path recipe.json
COPY . .
ARG DEALSYNC_GIT_REV=unknown
ENV DEALSYNC_GIT_REV=${DEALSYNC_GIT_REV}
# The production binary: without the built-in simulator (the `sim` feature, for demos and tests).
RUN cargo build --release --locked --no-default-features --bin dealsync

# Runtime: glibc, CA certificates and a nonroot user (uid 65532), nothing else; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/dealsync /usr/local/bin/dealsync
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/dealsync"]
CMD ["sync"]

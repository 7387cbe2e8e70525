# syntax=docker/dockerfile:1
# Build:  docker build --build-arg DEALSYNC_GIT_REV=$(git rev-parse --short=12 HEAD) -t dealsync .
# Run:    docker run --rm --env-file my.env -v dealsync-data:/var/lib/dealsync dealsync sync
#         (my.env: the variables of config/example.env with your values; never bake them into the image.)
# The image is the production binary, built without the simulator: `--demo` and `simulate` are not in it.
# In containers BigQuery is the recommended sink (set BIGQUERY_PROJECT): the ledger lives in the dataset, so a
# container needs no state. Without it the SQLite file is /var/lib/dealsync/dealsync.db, and only a volume
# mounted there (as above) keeps it, and the ledger in it, from one run to the next. See docs/deploy.md.

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
# The state directory, owned by nonroot (65532) with mode 0700: distroless has no shell to create it.
RUN install -d -m 0700 -o 65532 -g 65532 /out/var/lib/dealsync

# Runtime: glibc, CA certificates and a nonroot user (uid 65532), nothing else; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/dealsync /usr/local/bin/dealsync
# Copying /var/lib/'s contents carries the directory itself, so it keeps its owner and mode; a named volume
# mounted there for the first time starts with them.
COPY --from=builder --chown=65532:65532 /out/var/lib/ /var/lib/
WORKDIR /var/lib/dealsync
VOLUME /var/lib/dealsync
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/dealsync"]
CMD ["sync"]

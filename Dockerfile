# Multi-stage build of the `plait` binary. The demo bundle in web-demo/dist/ is committed and
# embedded at compile time, so no Node step is needed.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin plait

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/plait /usr/local/bin/plait
USER nobody
EXPOSE 1234
ENTRYPOINT ["plait"]
CMD ["serve", "--host", "0.0.0.0", "--port", "1234"]

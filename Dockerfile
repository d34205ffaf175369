# The flowlake image: one binary, a subcommand per role.
#   docker build -t flowlake .
# The eBPF objects are committed (ebpf/obj), so the build needs no clang.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin flowlake \
 && cp target/release/flowlake /usr/local/bin/flowlake

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/flowlake /usr/local/bin/flowlake
# The collector runs as root with the capabilities the chart grants; the ingester and
# query service run as this user (the chart sets runAsUser 65532).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flowlake"]

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
# iproute2 (ip, ss), nftables and iptables: the network snapshot a packet
# capture takes on its node (docs/capture.md).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates iproute2 nftables iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/flowlake /usr/local/bin/flowlake
# The ingester and query service run as this user. The chart runs the collector as
# uid 0 with only the capabilities it needs (docs/operations.md, "Collector security").
# tests/podman.rs builds this stage on a debootstrapped base and runs it under podman.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flowlake"]

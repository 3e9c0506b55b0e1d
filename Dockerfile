# saml-gateway container image. For users with a Docker engine:
#
#   docker build -t saml-gateway .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#     -v /srv/saml-gateway/gateway.yaml:/etc/saml-gateway/gateway.yaml:ro \
#     -v saml-gateway-data:/var/lib/saml-gateway saml-gateway
#
# The image runs `saml-gateway serve --config /etc/saml-gateway/gateway.yaml` as the
# unprivileged user `saml-gateway`. /var/lib/saml-gateway belongs to that user: put the SP key
# pair and the audit log there (or on other writable paths). In the container, set `listen:` to
# 0.0.0.0:8080 so that the published port reaches the gateway.
# See docs/docker.md and docs/configuration.md.

# --- build ---
FROM rust:1-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libclang-dev libxml2-dev libxmlsec1-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked --bin saml-gateway

# --- runtime ---
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libxmlsec1-openssl libxml2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --user-group --home-dir /var/lib/saml-gateway \
      --shell /usr/sbin/nologin saml-gateway \
 && mkdir -p /etc/saml-gateway /var/lib/saml-gateway \
 && chown saml-gateway:saml-gateway /var/lib/saml-gateway \
 && chmod 0750 /var/lib/saml-gateway
COPY --from=build /src/target/release/saml-gateway /usr/local/bin/saml-gateway
USER saml-gateway
WORKDIR /var/lib/saml-gateway
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/saml-gateway"]
CMD ["serve", "--config", "/etc/saml-gateway/gateway.yaml"]

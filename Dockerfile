# clipmill: multi-stage build on Debian 12 with the GStreamer runtime and the Python workers.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock config.toml ./
COPY src ./src
COPY schemas ./schemas
COPY benches ./benches
COPY loadtest ./loadtest
RUN cargo build --release --locked --bin clipmill

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates python3 python3-venv libgl1 libglib2.0-0 fonts-dejavu-core \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY python ./python
RUN python3 -m venv /app/.venv \
    && /app/.venv/bin/pip install --no-cache-dir -r python/requirements.txt
COPY --from=build /src/target/release/clipmill /usr/local/bin/clipmill
COPY config.toml /app/config.toml
RUN useradd --system --home /app clipmill && chown -R clipmill /app
USER clipmill
# Listen on all interfaces inside the container; put API keys and a signing secret in the
# environment (CLIPMILL__SERVER__API_KEYS__<KEY>=<tenant>, CLIPMILL__SERVER__SIGNING_SECRET).
ENV CLIPMILL__SERVER__BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["clipmill"]
CMD ["serve"]

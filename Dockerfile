# qqmx as a sidecar: a static binary in an empty image, running as a non-root user.
#
#   docker build -t qqmx .
#   docker run -p 2525:2525 -p 8025:8025 -e QQMX_API_TOKEN=s3cret qqmx
#
# The control API listens on 0.0.0.0 inside the container, so it requires a bearer token:
# set QQMX_API_TOKEN (qqmx refuses to start without one), or QQMX_API=127.0.0.1:8025 to
# keep the API inside the container.
#
# Stages: `build` compiles the binary; `prebuilt` takes one already built on the host
# (scripts/build-image.sh, which the test suite runs); `runtime` is the image, the same
# for both: BINARY_FROM picks where its binary comes from, so the image users build and
# the image the tests build cannot drift apart.
ARG BINARY_FROM=build

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --features cli --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/qqmx /qqmx

FROM scratch AS prebuilt
COPY target/x86_64-unknown-linux-gnu/release/qqmx /qqmx

FROM ${BINARY_FROM} AS binary

FROM scratch AS runtime
COPY --from=binary /qqmx /qqmx
COPY docker/passwd /etc/passwd
USER 65532:65532
ENV QQMX_SMTP=mx1=0.0.0.0:2525,mx2=0.0.0.0:2526,mx3=0.0.0.0:2527,mxbiz1=0.0.0.0:2528 \
    QQMX_API=0.0.0.0:8025
EXPOSE 2525 2526 2527 2528 8025
HEALTHCHECK --interval=5s --timeout=3s --start-period=2s --retries=3 CMD ["/qqmx", "health"]
ENTRYPOINT ["/qqmx"]
CMD ["serve"]

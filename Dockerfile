# qqmx as a sidecar: a static binary alone in an empty image, running as a non-root user.
#
#   docker build -t qqmx .
#   docker run --rm -p 2525-2528:2525-2528 -p 8025:8025 -e QQMX_API_TOKEN=s3cret qqmx
#
# Inside the container the SMTP listeners and the control API listen on 0.0.0.0, so the
# API is reachable from other hosts and qqmx requires a bearer token: set QQMX_API_TOKEN
# (without one qqmx exits at once, saying so), or QQMX_API=127.0.0.1:8025 to keep the API
# inside the container. There is deliberately no default token: a token baked into a
# public image protects nothing. /healthz and /readyz answer without the token.
#
# Stages. `build` compiles the binary from the sources; `prebuilt` takes one compiled
# outside, from the build context (scripts/build-image.sh, which the test suite runs,
# where no base image can be pulled). `runtime` is the image, written once: BINARY_FROM
# picks which of the two stages it copies /qqmx from, and nothing else differs. So the
# image users build (`docker build .`: BINARY_FROM=build) and the image the tests build
# and run (`--target runtime --build-arg BINARY_FROM=prebuilt`) share every line of their
# final stage and cannot drift apart. BuildKit and buildah build only the stages the
# target needs, so the default build never reads target/, and the tested build never
# pulls the Rust image.
ARG BINARY_FROM=build

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# glibc linked statically (+crt-static) runs in an empty image; the host's target triple,
# so the same Dockerfile builds on amd64 and arm64.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --features cli --target "$target" \
 && cp "target/$target/release/qqmx" /qqmx

FROM scratch AS prebuilt
COPY target/x86_64-unknown-linux-gnu/release/qqmx /qqmx

FROM ${BINARY_FROM} AS binary

FROM scratch AS runtime
COPY --from=binary /qqmx /qqmx
# A passwd naming the user, so that tools show "qqmx" rather than a bare number.
COPY docker/passwd /etc/passwd
USER 65532:65532
ENV QQMX_SMTP=mx1=0.0.0.0:2525,mx2=0.0.0.0:2526,mx3=0.0.0.0:2527,mxbiz1=0.0.0.0:2528 \
    QQMX_API=0.0.0.0:8025
EXPOSE 2525 2526 2527 2528 8025
# `qqmx health` asks http://127.0.0.1:8025/healthz (QQMX_API's 0.0.0.0 means loopback):
# the image has no shell and no curl.
HEALTHCHECK --interval=5s --timeout=3s --start-period=2s --retries=3 CMD ["/qqmx", "health"]
ENTRYPOINT ["/qqmx"]
CMD ["serve"]

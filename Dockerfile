# branchgate in a FROM-scratch image: one static (musl) binary and nothing else.
#
#   docker build -t branchgate .
#   docker run -d --name branchgate \
#       -v /var/run/docker.sock:/var/run/docker.sock:ro \
#       -p 80:80 -p 443:443 branchgate
#
# The defaults suit a container as they are: the HTTP listener is 0.0.0.0:80,
# the engine is the mounted /var/run/docker.sock, and the shutdown grace
# period (8 s) ends before `docker stop` (10 s) sends SIGKILL. Flags go after
# the image name (`... branchgate --log-format json`) or in BRANCHGATE_* env.
# It runs as root: the Docker socket is root's (or the docker group's), and
# port 80 needs root or CAP_NET_BIND_SERVICE.
#
# Two ways to build it:
# - `docker build .` runs both stages; the build stage needs rust:1-alpine.
# - scripts/docker-image.sh builds the binary on the host with cargo and then
#   ONLY the runtime stage, with no base image to pull: it takes the lines from
#   the "runtime stage" marker to the end of this file, rewrites the one
#   `COPY --from=build ... /branchgate` line into a plain `COPY branchgate
#   /branchgate`, and builds that in a temporary context holding just the
#   binary. So: keep the runtime stage last, after its marker line, and keep
#   its COPY --from=build on one line.

# The musl target of the machine building; set it on arm64
# (--build-arg TARGET=aarch64-unknown-linux-musl).
ARG TARGET=x86_64-unknown-linux-musl

# The toolchain link/pgo-musl.stamp names: symbol names, which the profile
# is keyed by, change with the compiler's version.
FROM rust:1.95-alpine AS build
ARG TARGET
# ring compiles C and assembly.
RUN apk add --no-cache gcc musl-dev
WORKDIR /src
# .dockerignore lets in only what the build reads (no target/, no .git).
COPY . .
# The x86_64 build is profile-guided as scripts/docker-image.sh's is
# (link/pgo-musl.profdata, written by scripts/pgo.sh).
RUN rustup target add "$TARGET" \
    && if [ "$TARGET" = x86_64-unknown-linux-musl ] && [ -s link/pgo-musl.profdata ]; then \
        export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-Cprofile-use=/src/link/pgo-musl.profdata"; fi \
    && cargo build --release --target "$TARGET" --bin branchgate \
    && cp "target/$TARGET/release/branchgate" /branchgate \
    && strip --strip-debug /branchgate

# --- runtime stage ---
FROM scratch AS runtime
COPY --from=build /branchgate /branchgate
EXPOSE 80 443
# ACME state: account, issued certificates and keys. Mount a volume here.
VOLUME ["/data"]
ENTRYPOINT ["/branchgate"]

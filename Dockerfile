# syntax=docker/dockerfile:1

# One image holds all three programs (receiver, consumer, wxpayctl):
#   - one build: they share every internal package, so one `go build` compiles
#     them together and the module cache and build cache are used once;
#   - one image to scan, sign and pin by digest: the receiver, the consumer and
#     the `wxpayctl streams apply` init step always run the same code version;
#   - the command chooses the program (Kubernetes `command:`), e.g.
#       docker run IMAGE                       # receiver (the default)
#       docker run IMAGE /usr/local/bin/consumer
#       docker run IMAGE /usr/local/bin/wxpayctl dlq ls
# The programs are pure Go (CGO_ENABLED=0), so the result is a static binary on
# distroless/static: no shell, no package manager, no libc, runs as non-root.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Dependencies first, so a source-only change reuses this layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w" -o /out/ \
      ./cmd/receiver ./cmd/consumer ./cmd/wxpayctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/receiver /out/consumer /out/wxpayctl /usr/local/bin/
# 65532 is distroless' "nonroot"; numeric so that Kubernetes' runAsNonRoot can
# verify it without reading /etc/passwd.
USER 65532:65532
# 8080 public notify listener (receiver), 9090 receiver admin, 9091 consumer admin.
EXPOSE 8080 9090 9091
CMD ["/usr/local/bin/receiver"]

# The local stack's Python base: Debian bookworm (bootstrapped from Debian's packages, `make stack`),
# Debian's Python 3.11 in a venv on PATH, and the CPU build of torch from a wheel in the build context
# (no multi-GB CUDA wheels on a CPU machine).  Production keeps the CUDA PyTorch base
# (docker/Dockerfile's BASE_IMAGE default); this image stands in for it where no registry is reachable.
ARG DEBIAN_IMAGE=zsexp-debian:bookworm
# hadolint ignore=DL3006
FROM ${DEBIAN_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# the build machine's CA bundle: pip and apt reach their registries through it (a TLS-inspecting
# network needs its own CA); the same file serves Python's TLS clients at run time
COPY ca-certificates.crt /etc/ssl/certs/zsexp-build-ca.crt
ENV PIP_CERT=/etc/ssl/certs/zsexp-build-ca.crt \
    SSL_CERT_FILE=/etc/ssl/certs/zsexp-build-ca.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/zsexp-build-ca.crt

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates curl procps \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && pip install --no-cache-dir pip==26.3 setuptools==84.2.1 wheel==0.48.0

# torch: the wheel named by TORCH_WHEEL in the context (`make stack` stages the CPU wheel it finds), or,
# with none staged, the CPU build from PyTorch's own index
ARG TORCH_VERSION=2.13.0
COPY wheels/ /tmp/wheels/
RUN set -e; if ls /tmp/wheels/torch-*.whl >/dev/null 2>&1; then pip install /tmp/wheels/torch-*.whl; \
    else pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu; fi; \
    rm -rf /tmp/wheels

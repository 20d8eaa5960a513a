# The local stack's Postgres: Debian's postgresql-15 on the bootstrapped Debian base, with the same
# interface as the official image the production stack pulls (POSTGRES_USER / POSTGRES_PASSWORD /
# POSTGRES_DB, data in /var/lib/postgresql/data, pg_isready), run as the postgres user.
ARG DEBIAN_IMAGE=zsexp-debian:bookworm
# hadolint ignore=DL3006
FROM ${DEBIAN_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# no cluster at install time: the entrypoint initialises PGDATA on first start
# hadolint ignore=DL3008
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/zsexp.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p "$PGDATA" /run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /run/postgresql \
    && chmod 0700 "$PGDATA"

COPY postgres-entrypoint.sh /usr/local/bin/zsexp-postgres-entrypoint
# the postgres account Debian's package made (its uid, looked up at build time, is what runs)
# hadolint ignore=DL3066
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/zsexp-postgres-entrypoint"]
CMD ["postgres"]

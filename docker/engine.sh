#!/bin/sh
# Debian's Docker engine, compose and debootstrap where absent, and dockerd started (as root; the
# engine keeps its state in /var/lib/docker, so built layers survive a restart).
set -eu
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  need="$need docker-compose"
fi
if [ -n "$need" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  nohup dockerd >/var/log/zsexp-dockerd.log 2>&1 &
  i=0
  until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
      echo "docker engine: dockerd did not start within 60 s (see /var/log/zsexp-dockerd.log)" >&2
      exit 1
    fi
    sleep 1
  done
fi

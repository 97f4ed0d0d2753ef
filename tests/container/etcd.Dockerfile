# An etcd image for the container tests, from Debian's etcd-server (3.4.23) and etcd-client:
# base images other than the locally made debian:bookworm-slim cannot be pulled there. Like the
# official image, `etcd` and `etcdctl` are on PATH and the compose file gives the command.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends etcd-server etcd-client \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 2379 2380
CMD ["etcd"]

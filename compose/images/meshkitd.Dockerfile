# meshkitd and meshctl in an empty image. Built by scripts/static-image.sh from a build context
# holding only the two static binaries; nothing is pulled (there is no base image), so this builds
# without a registry. The binaries are static glibc (crt-static): they need no libc and no loader.
# Host names in a config (`advertise = "meshkit-1:7001"`, seeds by name) resolve through static
# glibc's built-in files and DNS lookups, from the /etc/hosts and /etc/resolv.conf that Docker
# mounts into every container (compose/env.py runs them so).
FROM scratch

COPY meshkitd meshctl /usr/local/bin/

# No shell and no user database in the image: a numeric user, the conventional "nonroot" id.
# Mounted keys are often readable by their owner only; run with `--user "$(id -u):$(id -g)"`.
USER 65532:65532
# Relative paths in a node.toml are resolved against the file's own directory, so configs and
# certificates are mounted together, e.g. `-v "$PWD/cluster:/etc/meshkit:ro"`.
WORKDIR /etc/meshkit

# 7001/udp gossip (QUIC); 8101 the control endpoint. Ports are the conventional ones of
# docs/hosting.md; a node.toml may choose others.
EXPOSE 7001/udp 8101/tcp 8101/udp

ENTRYPOINT ["/usr/local/bin/meshkitd"]
CMD ["--help"]

# meshkitd and meshctl in an empty image. Built by scripts/static-image.sh from a build context
# holding only the two static binaries; nothing is pulled (there is no base image), so this builds
# without a registry. The binaries are static glibc (crt-static): they need no libc, no loader and
# no /etc files, because configs give addresses as ip:port and nothing resolves host names.
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

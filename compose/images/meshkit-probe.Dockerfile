# meshkit-probe, the synthetic probe agent, in an empty image: the same family as meshkitd's
# (compose/images/meshkitd.Dockerfile), built by scripts/static-image.sh from a build context
# holding only the static binary. SQLite is compiled into it (rusqlite's bundled feature), so
# the history needs no library from the image.
FROM scratch

COPY meshkit-probe /usr/local/bin/

USER 65532:65532
# probes.toml, its credentials and the history database live together: mount a directory
# writable by the user above, e.g. `-v "$PWD/probe:/etc/meshkit-probe"`.
WORKDIR /etc/meshkit-probe

# The agent's own endpoint: /metrics, POST /-/reload, /-/healthy (probes.toml [agent] listen).
EXPOSE 9465/tcp

ENTRYPOINT ["/usr/local/bin/meshkit-probe"]
CMD ["--help"]

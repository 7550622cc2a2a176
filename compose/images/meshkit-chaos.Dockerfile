# meshkit-chaos in an empty image, for the compose stack's `autoscaler` service (compose/env.py,
# profile `autoscaler`): `meshkit-chaos autoscale --in-network --metrics 0.0.0.0:9466`, with the
# Docker socket mounted to start and stop worker containers. The same family as meshkitd's
# (compose/images/meshkitd.Dockerfile), built by scripts/static-image.sh from a build context
# holding only the static binary.
FROM scratch

COPY meshkit-chaos /usr/local/bin/

USER 65532:65532
# The autoscaler's /metrics and /-/healthy (`--metrics`).
EXPOSE 9466/tcp

ENTRYPOINT ["/usr/local/bin/meshkit-chaos"]
CMD ["--help"]

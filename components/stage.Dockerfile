# Image of every pipeline stage: `python -m components.<STAGE>`, built once per stage by
# `make images` (pipelines/images.py) with --build-arg STAGE=<module> (datagen, split, ...)
# and DEPS_IMAGE=<stage-deps reference> (components/deps.Dockerfile: venv, user 10001, /app,
# components/contracts/). Target `stage` for six stages, `register` for register.
# On Kubeflow (and in `python -m pipelines run --docker`) the component's command replaces
# the ENTRYPOINT; a plain `docker run <image> --help` runs the image's own stage.
ARG DEPS_IMAGE
# hadolint ignore=DL3006
FROM ${DEPS_IMAGE} AS stage
ARG STAGE
LABEL org.opencontainers.image.description="Cashier-integrity pipeline stage ${STAGE} (python -m components.${STAGE})" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV STAGE_MODULE=components.${STAGE}
WORKDIR /app
COPY components/${STAGE}/ components/${STAGE}/
USER 10001:10001
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"$STAGE_MODULE\" \"$@\"", "stage"]
CMD ["--help"]

# register loads every bundle with the serving engine and scores a self-test batch before
# it touches the registry (the code that serves, not a copy of it).
FROM stage AS register
COPY serving/__init__.py serving/model_loader.py serving/scorer.py serving/settings.py serving/

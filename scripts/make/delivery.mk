# Delivery: images, linters for Dockerfiles/manifests/workflows, infra dry runs.
IMAGE_ONLY ?=
IMAGE_ARGS = $(foreach name,$(IMAGE_ONLY),--only $(name))

.PHONY: base-image images-plan images images-push lint-delivery test-delivery test-containers infra-dry-run

base-image: $(STAMP) ## make the local Debian bookworm + python3.11 base image once (debootstrap + docker import; skipped when present)
	bash scripts/base_image.sh "$$($(PY) -c 'from pipelines.images import PYTHON_BASE; print(PYTHON_BASE)')"

images-plan: $(STAMP) ## print every image, its content tag and build context (no Docker engine needed)
	$(PY) -m tools.delivery.images --dry-run $(IMAGE_ARGS)

images: base-image ## build stage-deps, the 7 stage images and serving (once baked); prints sizes and build times, writes var/images-report.json (IMAGE_ONLY="datagen serving")
	$(PY) -m tools.delivery.images --report var/images-report.json $(IMAGE_ARGS)

images-push: $(STAMP) ## build, tag and push the images to IMAGE_REGISTRY
	$(PY) -m tools.delivery.images --push $(IMAGE_ARGS)

test-containers: $(STAMP) ## build (if missing) and run the real images: launcher conformance, pipeline run --docker, serving image (needs a Docker engine)
	$(PY) -m pytest -q tests/containers

lint-delivery: $(STAMP) ## hadolint, cfn-lint, workflow schema and shellcheck on the delivery files
	$(VENV)/bin/hadolint components/*.Dockerfile serving/Dockerfile
	$(VENV)/bin/cfn-lint manifests/lambda/template.yaml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	shellcheck scripts/*.sh .ci/run

test-delivery: $(STAMP) ## run the delivery tests only
	$(PY) -m pytest -q tests/unit/test_delivery_*.py tests/integration/test_delivery_*.py

infra-dry-run: ## print what setup_aws_infra.sh / setup_mlflow.sh would run
	bash scripts/setup_aws_infra.sh --dry-run --github-repo $${GITHUB_REPO:-owner/repo}
	bash scripts/setup_mlflow.sh --dry-run $${MLFLOW_ARTIFACT_ROOT:-s3://cashier-integrity-artifacts/mlflow}

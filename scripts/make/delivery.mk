# Delivery: images, linters for Dockerfiles/manifests/workflows, infra dry runs.
IMAGE_ONLY ?=
IMAGE_ARGS = $(foreach name,$(IMAGE_ONLY),--only $(name))

.PHONY: images-plan images images-push lint-delivery test-delivery infra-dry-run

images-plan: $(STAMP) ## print every image, tag and build context (no Docker engine needed)
	$(PY) scripts/build_images.py --dry-run $(IMAGE_ARGS)

images: $(STAMP) ## build and tag the images with the Docker SDK; writes var/images.json (IMAGE_ONLY="datagen serving")
	$(PY) scripts/build_images.py $(IMAGE_ARGS)

images-push: $(STAMP) ## build, tag and push the images to IMAGE_REGISTRY
	$(PY) scripts/build_images.py --push $(IMAGE_ARGS)

lint-delivery: $(STAMP) ## hadolint, cfn-lint, workflow schema and shellcheck on the delivery files
	$(VENV)/bin/hadolint components/*/Dockerfile serving/Dockerfile
	$(VENV)/bin/cfn-lint manifests/lambda/template.yaml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	shellcheck scripts/*.sh

test-delivery: $(STAMP) ## run the delivery tests only
	$(PY) -m pytest -q tests/unit/test_delivery_*.py tests/integration/test_delivery_*.py

infra-dry-run: ## print what setup_aws_infra.sh / setup_mlflow.sh would run
	bash scripts/setup_aws_infra.sh --dry-run --github-repo $${GITHUB_REPO:-owner/repo}
	bash scripts/setup_mlflow.sh --dry-run $${MLFLOW_ARTIFACT_ROOT:-s3://cashier-integrity-artifacts/mlflow}

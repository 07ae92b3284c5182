#!/usr/bin/env bash
# One-time AWS setup for the serving plane and CI/CD (run with admin credentials):
#   * S3 bucket for MLflow artifacts / the pipeline root (versioned, encrypted, private)
#   * ECR repositories for every image (scan on push, immutable tags)
#   * GitHub OIDC identity provider + a deploy role that GitHub Actions assumes
#     (aws-actions/configure-aws-credentials `role-to-assume`): no long-lived keys in GitHub.
#
#   ./setup_aws_infra.sh --github-repo <owner>/<repo> --dry-run   # print the commands only
#   ./setup_aws_infra.sh --github-repo <owner>/<repo>             # create / update
#
# Idempotent: existing resources are left as they are; the role's trust and permission
# policies are rewritten to the current definition each run. The Lambda function, its
# execution role and the HTTP API are created by the deploy workflow's CloudFormation
# stack (manifests/lambda/template.yaml), not here.
set -euo pipefail

REGION="${AWS_REGION:-us-east-1}"
BUCKET="cashier-integrity-artifacts"
REPO_PREFIX="cashier-integrity"
IMAGES="serving-lambda serving datagen split features train-xgb train-iforest evaluate register"
ROLE_NAME="cashier-integrity-github-deploy"
STACK_NAME="cashier-integrity-serving"
GITHUB_REPO=""
GITHUB_REF="refs/heads/main"
DRY_RUN=0

usage() {
  cat <<EOF
usage: $0 --github-repo OWNER/REPO [options]

  --github-repo OWNER/REPO  repository whose workflows may assume the deploy role (required)
  --github-ref REF          git ref allowed to deploy (default $GITHUB_REF)
  --region REGION           AWS region (default \$AWS_REGION or us-east-1: $REGION)
  --bucket NAME             artifact bucket (default $BUCKET; must be globally unique)
  --repo-prefix PREFIX      ECR repository prefix (default $REPO_PREFIX -> $REPO_PREFIX/<image>)
  --role-name NAME          deploy role name (default $ROLE_NAME)
  --stack-name NAME         CloudFormation stack the role may deploy (default $STACK_NAME)
  --dry-run                 print the commands that would run, call nothing
EOF
}

die() { echo "error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --github-repo) GITHUB_REPO="${2:?--github-repo needs a value}"; shift ;;
    --github-ref) GITHUB_REF="${2:?--github-ref needs a value}"; shift ;;
    --region) REGION="${2:?--region needs a value}"; shift ;;
    --bucket) BUCKET="${2:?--bucket needs a value}"; shift ;;
    --repo-prefix) REPO_PREFIX="${2:?--repo-prefix needs a value}"; shift ;;
    --role-name) ROLE_NAME="${2:?--role-name needs a value}"; shift ;;
    --stack-name) STACK_NAME="${2:?--stack-name needs a value}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

[[ "$GITHUB_REPO" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]] \
  || die "--github-repo must be OWNER/REPO, got '${GITHUB_REPO}'"
[[ "$BUCKET" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "invalid S3 bucket name '$BUCKET'"
[[ "$REGION" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]$ ]] || die "invalid AWS region '$REGION'"

quote() { local out=() a; for a in "$@"; do out+=("$(printf '%q' "$a")"); done; echo "${out[*]}"; }

# run CMD...: execute, or print it under --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then echo "+ $(quote "$@")"; else "$@"; fi
}

# ensure CHECK... -- CREATE...: run CREATE only when CHECK fails (the resource is missing).
ensure() {
  local check=()
  while [ "$1" != "--" ]; do check+=("$1"); shift; done
  shift
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ $(quote "${check[@]}") || $(quote "$@")"
  elif "${check[@]}" >/dev/null 2>&1; then
    echo "exists: ${check[*]: -1}"
  else
    "$@"
  fi
}

if [ "$DRY_RUN" = 1 ]; then
  ACCOUNT="<account-id>"
else
  command -v aws >/dev/null || die "the aws CLI is not installed"
  ACCOUNT="$(aws sts get-caller-identity --query Account --output text)" \
    || die "no AWS credentials (aws sts get-caller-identity failed)"
fi
export AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# write NAME: stdin to $WORK/NAME (shown under --dry-run).
write() {
  cat > "$WORK/$1"
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ write $1:"
    sed 's/^/    /' "$WORK/$1"
  fi
}

echo "# account $ACCOUNT, region $REGION, repo $GITHUB_REPO ($GITHUB_REF)"

# ---- S3 artifact bucket
if [ "$REGION" = us-east-1 ]; then
  ensure aws s3api head-bucket --bucket "$BUCKET" -- aws s3api create-bucket --bucket "$BUCKET"
else
  ensure aws s3api head-bucket --bucket "$BUCKET" -- aws s3api create-bucket --bucket "$BUCKET" \
    --create-bucket-configuration "LocationConstraint=$REGION"
fi
run aws s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
  BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
run aws s3api put-bucket-versioning --bucket "$BUCKET" --versioning-configuration Status=Enabled
run aws s3api put-bucket-encryption --bucket "$BUCKET" --server-side-encryption-configuration \
  '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'

# ---- ECR repositories
for image in $IMAGES; do
  ensure aws ecr describe-repositories --repository-names "$REPO_PREFIX/$image" -- \
    aws ecr create-repository --repository-name "$REPO_PREFIX/$image" \
    --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true
done

# ---- GitHub OIDC provider and deploy role
OIDC_ARN="arn:aws:iam::$ACCOUNT:oidc-provider/token.actions.githubusercontent.com"
ensure aws iam get-open-id-connect-provider --open-id-connect-provider-arn "$OIDC_ARN" -- \
  aws iam create-open-id-connect-provider --url https://token.actions.githubusercontent.com \
  --client-id-list sts.amazonaws.com

write trust.json <<EOF
{
  "Version": "2012-10-17",
  "Statement": [{
    "Effect": "Allow",
    "Principal": {"Federated": "$OIDC_ARN"},
    "Action": "sts:AssumeRoleWithWebIdentity",
    "Condition": {
      "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
      "StringLike": {"token.actions.githubusercontent.com:sub": [
        "repo:$GITHUB_REPO:ref:$GITHUB_REF",
        "repo:$GITHUB_REPO:environment:production"
      ]}
    }
  }]
}
EOF

write permissions.json <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
    {"Sid": "EcrPush", "Effect": "Allow",
     "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
                "ecr:DescribeImages", "ecr:GetDownloadUrlForLayer", "ecr:InitiateLayerUpload",
                "ecr:PutImage", "ecr:UploadLayerPart", "ecr:GetRepositoryPolicy",
                "ecr:SetRepositoryPolicy"],
     "Resource": "arn:aws:ecr:$REGION:$ACCOUNT:repository/$REPO_PREFIX/*"},
    {"Sid": "Stack", "Effect": "Allow", "Action": "cloudformation:*",
     "Resource": ["arn:aws:cloudformation:$REGION:$ACCOUNT:stack/$STACK_NAME/*",
                  "arn:aws:cloudformation:$REGION:aws:transform/Serverless-2016-10-31"]},
    {"Sid": "StackChangeSets", "Effect": "Allow",
     "Action": ["cloudformation:CreateChangeSet", "cloudformation:DescribeChangeSet",
                "cloudformation:ExecuteChangeSet", "cloudformation:GetTemplateSummary"],
     "Resource": "*"},
    {"Sid": "StackResources", "Effect": "Allow",
     "Action": ["lambda:*", "apigateway:*", "logs:CreateLogGroup", "logs:DeleteLogGroup",
                "logs:PutRetentionPolicy", "logs:DescribeLogGroups", "logs:TagResource"],
     "Resource": "*"},
    {"Sid": "FunctionRole", "Effect": "Allow",
     "Action": ["iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:PassRole", "iam:TagRole",
                "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:PutRolePolicy",
                "iam:DeleteRolePolicy", "iam:GetRolePolicy"],
     "Resource": "arn:aws:iam::$ACCOUNT:role/$STACK_NAME-*"},
    {"Sid": "Artifacts", "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
     "Resource": ["arn:aws:s3:::$BUCKET", "arn:aws:s3:::$BUCKET/*"]}
  ]
}
EOF

ensure aws iam get-role --role-name "$ROLE_NAME" -- \
  aws iam create-role --role-name "$ROLE_NAME" \
  --description "GitHub Actions deploy role for $GITHUB_REPO" \
  --assume-role-policy-document "file://$WORK/trust.json"
run aws iam update-assume-role-policy --role-name "$ROLE_NAME" \
  --policy-document "file://$WORK/trust.json"
run aws iam put-role-policy --role-name "$ROLE_NAME" --policy-name deploy \
  --policy-document "file://$WORK/permissions.json"

cat <<EOF
# Done. Set these GitHub repository variables/secrets (Settings -> Secrets and variables):
#   secret   AWS_DEPLOY_ROLE_ARN = arn:aws:iam::$ACCOUNT:role/$ROLE_NAME
#   secret   MLFLOW_TRACKING_URI = http://<mlflow host>:5000
#   variable AWS_REGION          = $REGION
#   variable ECR_REPOSITORY      = $REPO_PREFIX/serving-lambda
#   variable STACK_NAME          = $STACK_NAME
EOF

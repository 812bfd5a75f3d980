#!/usr/bin/env bash
# Submit a recipe as an AWS Batch array job, and the finalize job that runs once every child is done.
#
#   examples/aws-batch/submit.sh QUEUE CUBE DEST RECIPE [COUNT]
#   examples/aws-batch/submit.sh my-queue s3://bkt/plates/P1.zarr s3://bkt/profiles/P1 \
#       /opt/recipes/cell_profiles.py:recipe 8
#
# Register the two job definitions once:
#   aws batch register-job-definition --cli-input-json file://examples/aws-batch/recipe-job.json
#   aws batch register-job-definition --cli-input-json file://examples/aws-batch/finalize-job.json
#
# Each child runs slice AWS_BATCH_JOB_ARRAY_INDEX of COUNT (AWS Batch sets the index; the count
# is the job's parameter). A child that is retried, or the whole array submitted again, computes
# only the units without a done marker. The recipe file must be in the image (or on S3).
set -euo pipefail

queue=${1:?queue}; cube=${2:?cube}; dest=${3:?dest}; recipe=${4:?recipe}; count=${5:-8}

array_id=$(aws batch submit-job \
  --job-name "recipe-$(basename "$dest")" \
  --job-queue "$queue" \
  --job-definition cellcubes-recipe \
  --array-properties "size=$count" \
  --parameters "cube=$cube,dest=$dest,recipe=$recipe,count=$count" \
  --query jobId --output text)
echo "array job $array_id: $count slices of $cube"

finalize_id=$(aws batch submit-job \
  --job-name "recipe-finalize-$(basename "$dest")" \
  --job-queue "$queue" \
  --job-definition cellcubes-recipe-finalize \
  --depends-on "jobId=$array_id" \
  --parameters "dest=$dest" \
  --query jobId --output text)
echo "finalize job $finalize_id runs when $array_id has succeeded"
echo "then: python -c \"import pandas as pd; print(pd.read_parquet('$dest'))\""

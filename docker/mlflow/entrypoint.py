"""Start ``mlflow server`` for docker-compose after making sure its artifact bucket exists.

Environment (from docker-compose / .env; secrets are never printed):
  MLFLOW_BACKEND_STORE_URI   postgresql+psycopg2://user:password@postgres:5432/mlflow
  MLFLOW_ARTIFACTS_BUCKET    bucket on the S3-compatible store (created if missing)
  MLFLOW_S3_ENDPOINT_URL     e.g. http://minio:9000
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION
"""

from __future__ import annotations

import os
import sys
import time


def ensure_bucket(bucket: str) -> None:
    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    for attempt in range(30):
        try:
            try:
                s3.head_bucket(Bucket=bucket)
            except ClientError:
                s3.create_bucket(Bucket=bucket)
                print(f"created bucket {bucket}", flush=True)
            return
        except EndpointConnectionError:
            time.sleep(2)
    print("S3 endpoint unreachable", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    bucket = os.environ.get("MLFLOW_ARTIFACTS_BUCKET", "mlflow")
    ensure_bucket(bucket)
    args = [
        "mlflow", "server",
        "--backend-store-uri", os.environ["MLFLOW_BACKEND_STORE_URI"],
        "--artifacts-destination", f"s3://{bucket}/artifacts",
        "--serve-artifacts",
        "--host", "0.0.0.0", "--port", "5000",
        "--workers", os.environ.get("MLFLOW_WORKERS", "2"),
        "--allowed-hosts", os.environ.get("MLFLOW_ALLOWED_HOSTS", "mlflow,mlflow:5000,localhost,localhost:5000,127.0.0.1,127.0.0.1:5000"),
    ]
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()

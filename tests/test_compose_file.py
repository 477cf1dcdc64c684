"""docker-compose.yml, Dockerfile and .env.example, checked without a Docker engine.

The compose file is validated against the Compose Specification JSON schema (vendored by the
``check-jsonschema`` package), then checked for what clicktune needs: every service present with a
real healthcheck, dependencies gated on health, worker settings that exist, secrets only from .env.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
REQUIRED = {"redis", "mongo", "postgres", "mlflow", "minio", "chroma", "worker"}
# Third-party variables the worker may get besides CLICKTUNE_* settings.
ALLOWED_FOREIGN_ENV = {"MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                       "AWS_DEFAULT_REGION", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MLFLOW_DISABLE_TELEMETRY"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_DSN|_URL|_URI)$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_matches_the_compose_specification(compose):
    import jsonschema

    schema_file = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # and the schema really rejects a broken file (the check can fail)
    broken = {"services": {"worker": {"image": "x", "healthcheck": {"test": 5}, "depends_on": {"a": {"condition": "maybe"}}}}}
    assert list(validator.iter_errors(broken))


def test_every_required_service_has_a_real_healthcheck(compose):
    services = compose["services"]
    assert REQUIRED <= set(services), f"missing: {REQUIRED - set(services)}"
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        test = check["test"]
        assert test and test != ["NONE"], name
        if isinstance(test, list):
            assert test[0] in {"CMD", "CMD-SHELL"}, name


def test_dependencies_wait_for_health(compose):
    services = compose["services"]
    assert {"redis", "mongo", "mlflow", "chroma"} <= set(services["worker"]["depends_on"])
    assert {"postgres", "minio"} <= set(services["mlflow"]["depends_on"])
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must use conditions"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"


def test_worker_env_names_only_existing_settings(compose):
    from loaders.settings import LoaderSettings
    from worker.settings import Settings

    known = {f"CLICKTUNE_{name.upper()}" for name in Settings.model_fields}
    known |= {f"CLICKTUNE_{name.upper()}" for name in LoaderSettings.model_fields}
    env = _env(compose["services"]["worker"])
    for name in env:
        if name.startswith("CLICKTUNE_"):
            assert name in known, f"worker env {name} is not a setting"
        else:
            assert name in ALLOWED_FOREIGN_ENV, f"unexpected worker env {name}"
    for needed in ["CLICKTUNE_REDIS_URL", "CLICKTUNE_MONGO_URL", "CLICKTUNE_MLFLOW_TRACKING_URI", "CLICKTUNE_CHROMA_HOST"]:
        assert needed in env
    assert env["CLICKTUNE_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["CLICKTUNE_CHROMA_HOST"] == "chroma"
    # the values the worker gets really parse as settings (placeholders: their default, else "x")
    placeholder = re.compile(r"\$\{[^}:]*(?::-([^}]*))?\}")
    substituted = {k: placeholder.sub(lambda m: m.group(1) if m.group(1) is not None else "x", v)
                   for k, v in env.items() if k.startswith("CLICKTUNE_")}
    settings = Settings(**{k.removeprefix("CLICKTUNE_").lower(): v for k, v in substituted.items()
                           if k.removeprefix("CLICKTUNE_").lower() in Settings.model_fields})
    assert settings.chroma_port == 8000
    assert settings.train_mini_batch_size == 32


def test_mlflow_uses_postgres_backend_and_s3_artifacts(compose):
    env = _env(compose["services"]["mlflow"])
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    entry = (REPO / "docker" / "mlflow" / "entrypoint.py").read_text()
    assert "--artifacts-destination" in entry and "s3://" in entry
    dockerfile = (REPO / "docker" / "mlflow" / "Dockerfile").read_text()
    assert "psycopg2" in dockerfile and "boto3" in dockerfile


def test_secrets_come_from_env_file_only(compose):
    example = (REPO / ".env.example").read_text()
    example_vars = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    text = COMPOSE.read_text()
    required_vars = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+):\?", text))
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    assert required_vars and required_vars <= example_vars
    assert referenced <= example_vars, f"not in .env.example: {referenced - example_vars}"
    for line in example.splitlines():
        if re.match(r"^[A-Z_]*(PASSWORD|SECRET)[A-Z_]*=", line):
            assert "change-me" in line, f".env.example must not hold a real secret: {line.split('=')[0]}"
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert value.startswith("${"), f"{name}.{key} is a literal secret"
            if "://" in value and "@" in value:
                assert re.search(r":\$\{[A-Z_]+\}@", value), f"{name}.{key} embeds a literal credential"
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_dockerfile_is_cpu_by_default_non_root_with_healthcheck():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}" --index-url "\$\{TORCH_INDEX_URL\}"', text)
    assert text.index("torch==") < text.index("pip install .")  # torch pinned before the package
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    assert re.search(r'^CMD \["clicktune", "worker"\]$', text, re.M)
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        if not source.startswith("--"):
            assert (REPO / source).exists() or source == "README.md", f"COPY source {source} missing"


def test_container_healthcheck_script_against_real_services(mongo_server, redis_url):
    script = REPO / "docker" / "healthcheck.py"
    env = {"CLICKTUNE_REDIS_URL": redis_url, "CLICKTUNE_MONGO_URL": mongo_server.url,
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad_env = {**env, "CLICKTUNE_MONGO_URL": "mongodb://user:s3cr3t-pw@127.0.0.1:1/?serverSelectionTimeoutMS=500"}
    bad = subprocess.run([sys.executable, str(script)], env=bad_env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "mongo unreachable" in bad.stdout
    assert "s3cr3t-pw" not in bad.stdout + bad.stderr

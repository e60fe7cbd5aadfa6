"""docker-compose.yml, .env.example and the Dockerfile, checked without Docker (no daemon and no registry here):
the services and their wiring, the variables the code reads (from rag/config.py and rag/engine/config.py),
the healthchecks; and `docker-compose config` when that CLI is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from rag.config import Settings, parse_ollama_host
from rag.engine.config import EngineSettings
from rag.errors import ExposedWithoutKeys
from rag.serve.auth import refuse_open_bind
from tests.support.servers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")


def variables(settings: type[BaseSettings], prefix: str) -> set[str]:
    """The environment variables a settings class reads: an alias's first name, or PREFIX + the field's name."""
    found = set()
    for name, info in settings.model_fields.items():
        alias = info.validation_alias
        found.add(str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"{prefix}{name.upper()}")
    return found


READ = variables(Settings, "RAG_")


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the code builds them in a container with `env` (and nothing else of ours) in its environment."""
    for name in READ:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def example_values(commented: bool) -> dict[str, str]:
    """VAR=value lines of .env.example: the ones set, or also those shown commented out."""
    pattern = re.compile(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$")
    found = {}
    for line in ENV_EXAMPLE.splitlines():
        if (m := pattern.match(line)) and (commented or not m.group(1)):
            found[m.group(2)] = m.group(3)
    return found


def test_the_services_are_ollama_chroma_rag_and_a_rag_ingest_profile():
    assert set(SERVICES) == {"ollama", "chroma", "rag", "rag-ingest"}
    assert SERVICES["ollama"]["image"].startswith("ollama/ollama:")
    assert SERVICES["chroma"]["image"].startswith("chromadb/chroma:")
    assert SERVICES["rag"]["build"] == "."
    assert SERVICES["rag-ingest"]["image"] == SERVICES["rag"]["image"]  # the image the rag service builds
    assert SERVICES["rag-ingest"]["profiles"] == ["rag-ingest"]
    assert SERVICES["rag-ingest"]["command"][:2] == ["rag", "ingest"]
    assert "profiles" not in SERVICES["rag"]


def test_each_keeps_its_data_in_a_declared_volume():
    declared = set(COMPOSE["volumes"])
    mounts = {name: [v.split(":")[:2] for v in s.get("volumes", [])] for name, s in SERVICES.items()}
    assert ["ollama-models", "/root/.ollama"] in mounts["ollama"]
    assert ["chroma-data", "/data"] in mounts["chroma"]
    storage = SERVICES["rag"]["environment"]["RAG_STORAGE_DIR"]
    for rag in ("rag", "rag-ingest"):  # both see the same keyword index and manifest
        assert ["rag-storage", storage] in mounts[rag]
    named = {source for ms in mounts.values() for source, _ in ms if not source.startswith(".")}
    assert named <= declared


def test_ollama_and_chroma_have_healthchecks_and_rag_waits_for_both():
    assert SERVICES["ollama"]["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    assert "8000" in " ".join(SERVICES["chroma"]["healthcheck"]["test"])
    for rag in ("rag", "rag-ingest"):
        assert SERVICES[rag]["depends_on"] == {"ollama": {"condition": "service_healthy"},
                                              "chroma": {"condition": "service_healthy"}}


def test_rags_healthcheck_is_liveness_as_in_the_dockerfile():
    assert "/livez" in " ".join(SERVICES["rag"]["healthcheck"]["test"])
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"HEALTHCHECK[^\n]*\n[^\n]*/livez", dockerfile)
    assert "/health'" not in dockerfile


@pytest.mark.parametrize("service", ["rag", "rag-ingest"])
def test_every_variable_compose_sets_is_one_the_code_reads_and_points_at_a_service(service, monkeypatch):
    env = SERVICES[service]["environment"]
    assert set(env) <= READ, set(env) - READ
    _, ollama_host, ollama_port = parse_ollama_host(env["OLLAMA_HOST"])
    assert ollama_host in SERVICES
    assert ollama_port == 11434
    assert env["RAG_CHROMA_HOST"] in SERVICES
    settings = settings_from(env, monkeypatch)
    assert settings.ollama_urls == ["http://ollama:11434"]
    assert settings.chroma_port == 8000
    assert settings.docs_dir == Path("/app/docs")
    mounted = {v.split(":")[1] for v in SERVICES[service]["volumes"]}
    assert str(settings.docs_dir) in mounted


def test_rag_listens_beyond_loopback_and_so_needs_a_key():
    env = SERVICES["rag"]["environment"]
    assert env["RAG_HOST"] == "0.0.0.0"
    assert SERVICES["rag"]["ports"] == [f"{env['RAG_PORT']}:{env['RAG_PORT']}"]
    assert "RAG_API_KEYS" not in env  # from .env, never written in the compose file
    with pytest.raises(ExposedWithoutKeys):
        refuse_open_bind(Settings(_env_file=None, host="0.0.0.0"))  # type: ignore[call-arg]


def test_env_example_names_every_variable_the_code_reads_and_its_values_are_valid(monkeypatch):
    shown = example_values(commented=True)
    assert set(shown) >= READ, READ - set(shown)
    engine = variables(EngineSettings, "RAG_ENGINE_")
    assert set(shown) >= engine, engine - set(shown)
    values = {k: v for k, v in shown.items() if k in READ and v}
    assert settings_from(values, monkeypatch).allowed_hosts == values["RAG_ALLOWED_HOSTS"]  # every value parses
    assert example_values(commented=False)["RAG_API_KEYS"] == ""  # no key anyone could copy


def test_dockerfile_default_serves_no_open_api():
    runtime = (ROOT / "Dockerfile").read_text(encoding="utf-8").split("AS runtime", 1)[1]
    runtime = "\n".join(line for line in runtime.splitlines() if not line.lstrip().startswith("#"))
    env = dict(re.findall(r"(RAG_[A-Z_]+)=(\S+)", runtime))
    assert env["RAG_HOST"] == "0.0.0.0"
    assert "RAG_API_KEYS" not in env
    assert "insecure" not in runtime.lower()  # no --insecure-no-auth in CMD
    with pytest.raises(ExposedWithoutKeys):
        refuse_open_bind(Settings(_env_file=None, host=env["RAG_HOST"]))  # type: ignore[call-arg]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="the docker-compose CLI is not installed")
def test_docker_compose_config_accepts_the_file(tmp_path):
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")  # the README's first step
    done = subprocess.run(["docker-compose", "--profile", "rag-ingest", "config", "--services"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == set(SERVICES)

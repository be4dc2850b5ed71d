"""The container files against the README: the same command, settings and steps, and a clean lint.

No container engine is needed: the Dockerfile is linted with hadolint (installed by
requirements-dev.txt), read as text, and the pieces that can run without Docker are run (the entry
step, the health check); compose.yaml is read as YAML and checked against the settings.
"""

import ast
import fnmatch
import http.server
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from settings import Settings
from testkit import TEST_SECRET

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# uvicorn's options that the image takes from the environment instead, because they depend on
# the deployment (how many cores, which proxy), with the variable uvicorn reads for each.
FROM_ENVIRONMENT = {"workers": "WEB_CONCURRENCY", "forwarded_allow_ips": "FORWARDED_ALLOW_IPS"}
# Variables that are not settings, and the module that reads each.
READ_ELSEWHERE = {
    "WEB_CONCURRENCY": "uvicorn.config",
    "FORWARDED_ALLOW_IPS": "uvicorn.config",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client.values",
}
SETTINGS = {name.upper() for name in Settings.model_fields}


# --- Reading the files -----------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines inside a continued instruction too
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        name, _, arguments = (current + line).partition(" ")
        instructions.append((name.upper(), arguments.strip()))
        current = ""
    assert current == "", "the Dockerfile ends inside a continued instruction"
    return instructions


def instruction(name: str) -> str:
    """The arguments of the last such instruction (the one in force)."""
    found = [arguments for each, arguments in dockerfile() if each == name]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not the exec (JSON) form: {arguments}"
    return [str(item) for item in value]


def healthcheck_command() -> list[str]:
    _options, _, command = instruction("HEALTHCHECK").partition("CMD ")
    assert command, "HEALTHCHECK has no CMD"
    return exec_form(command)


def readme_block() -> list[str]:
    """The lines of the first shell block of the README's 'Running in production', continuations
    joined."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Running in production\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    return block.replace("\\\n", " ").splitlines()


def readme_command() -> list[str]:
    commands = [shlex.split(line, comments=True) for line in readme_block()]
    found = [words for words in commands if words and Path(words[0]).name == "uvicorn"]
    assert len(found) == 1, "the production block should run uvicorn once"
    return found[0]


def readme_exports() -> dict[str, str]:
    exports = {}
    for line in readme_block():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            for word in words[1:]:
                name, _, value = word.partition("=")
                exports[name] = value
    return exports


def uvicorn_options(command: list[str]) -> dict[str, Any]:
    """The command line as uvicorn itself reads it (defaults filled in, environment ignored)."""
    assert Path(command[0]).name == "uvicorn", command
    cli = importlib.import_module("uvicorn.main").main
    context = cli.make_context("uvicorn", list(command[1:]), auto_envvar_prefix=None)
    return dict(context.params)


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def api_environment() -> dict[str, str]:
    environment = compose()["services"]["api"]["environment"]
    assert isinstance(environment, dict), "give the api's environment as a mapping"
    return {str(name): str(value) for name, value in environment.items()}


def interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, with `given` as the environment."""

    def one(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3) or ""
        if given.get(name):
            return given[name]
        assert operator != ":?", f"{name} is required: {rest}"
        return rest if operator == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def seconds(duration: str) -> float:
    """A compose duration (30s, 1m30s) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(n) * units[u] for n, u in parts)


def image_command() -> list[str]:
    return exec_form(instruction("CMD"))


# --- The Dockerfile ----------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    if not hadolint.exists():  # make test installs it: missing is a broken setup, not a skip
        pytest.fail(f"{hadolint} is missing: run `.venv/bin/pip install -r requirements-dev.txt`")
    result = subprocess.run(  # noqa: S603
        [hadolint, "--no-color", "--failure-threshold", "style", DOCKERFILE.name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_the_readme_production_command() -> None:
    readme = uvicorn_options(readme_command())
    image = uvicorn_options(image_command())
    differing = {name for name in readme if readme[name] != image[name]}
    # Everything the same (app, --http protocol, host, port, timeouts) but what the image reads
    # from the environment, which it then leaves to the environment.
    assert differing == set(FROM_ENVIRONMENT), differing
    assert all(image[name] is None for name in FROM_ENVIRONMENT)
    assert readme["app"] == "main:app"
    assert readme["http"] == "server:BoundedHttpToolsProtocol"
    assert readme["workers"] > 1 and readme["timeout_graceful_shutdown"]


def test_the_libraries_read_the_variables_the_image_relies_on() -> None:
    assert set(FROM_ENVIRONMENT.values()) <= set(READ_ELSEWHERE)
    for variable, module in READ_ELSEWHERE.items():
        source = Path(importlib.import_module(module).__file__ or "").read_text()
        assert re.search(rf"[\"']{variable}[\"']", source), f"{module} no longer reads {variable}"


def test_the_base_image_is_a_slim_python_the_project_supports() -> None:
    images = [arguments.split()[0] for name, arguments in dockerfile() if name == "FROM"]
    assert len(images) == 1
    match = re.fullmatch(r"python:3\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", images[0])
    assert match, images[0]
    pyproject = (ROOT / "pyproject.toml").read_text()
    least = re.search(r'requires-python = ">=3\.(\d+)"', pyproject)
    assert least and int(match.group(1)) >= int(least.group(1))


def test_the_image_runs_as_an_unprivileged_user() -> None:
    user = instruction("USER").split(":")[0]
    assert user not in {"root", "0", ""}
    # The last USER comes after every RUN: nothing runs as root once it is set.
    names = [name for name, _ in dockerfile()]
    last_user = max(i for i, name in enumerate(names) if name == "USER")
    assert all(i < last_user for i, name in enumerate(names) if name == "RUN")
    assert f"--uid {user}" in instruction("RUN"), "the user is created with the uid it runs as"


def test_the_image_installs_the_runtime_requirements_only() -> None:
    run = instruction("RUN")
    assert "pip install --no-cache-dir -r requirements.txt" in run
    assert "requirements-dev" not in DOCKERFILE.read_text()


def copy_sources() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    copies = []
    for name, arguments in dockerfile():
        if name != "COPY":
            continue
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        assert "--from" not in arguments, "a COPY from another stage: extend this test"
        copies.append((words[:-1], words[-1]))
    return copies


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `path` (relative, with /) out of the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # a directory's match covers it
    verdict = False
    for pattern in patterns:  # the last matching pattern decides; `!` lets a path back in
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        anywhere = pattern.startswith("**/")
        glob = pattern.removeprefix("**/")
        if any(fnmatch.fnmatchcase(p.rsplit("/", 1)[-1] if anywhere else p, glob) for p in prefixes):
            verdict = not negate
    return verdict


def copied_files() -> set[str]:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files: set[str] = set()
    for sources, _ in copy_sources():
        for source in sources:
            for match in ROOT.glob(source.rstrip("/")):
                found = [match] if match.is_file() else [p for p in match.rglob("*") if p.is_file()]
                files.update(str(p.relative_to(ROOT)) for p in found)
    return {path for path in files if not ignored(path, patterns)}


def local_imports(path: Path) -> set[Path]:
    """The repository's own files `path` imports (modules, packages and their submodules)."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = path.parent if node.level else ROOT
            for _ in range(max(node.level - 1, 0)):
                base = base.parent
            prefix = str(base.relative_to(ROOT)).replace("/", ".") if base != ROOT else ""
            module = ".".join(part for part in (prefix, node.module or "") if part)
            names = [module] + [f"{module}.{alias.name}" if module else alias.name for alias in node.names]
        for name in names:
            target = ROOT.joinpath(*name.split("."))
            for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                if candidate.is_file():
                    found.add(candidate)
            # `import routes.tasks` loads routes/__init__.py first
            for depth in range(1, len(name.split("."))):
                package = ROOT.joinpath(*name.split(".")[:depth]) / "__init__.py"
                if package.is_file():
                    found.add(package)
    return found


def needed_files() -> set[str]:
    """What the image runs: the app and its protocol (from the command), the migrations and
    everything they import from the repository, transitively."""
    options = uvicorn_options(image_command())
    roots = {ROOT / (module.split(":")[0] + ".py") for module in (options["app"], options["http"])}
    roots |= {ROOT / "migrations" / "env.py", *ROOT.glob("migrations/versions/*.py")}
    seen: set[Path] = set()
    todo = set(roots)
    while todo:
        path = todo.pop()
        seen.add(path)
        todo |= local_imports(path) - seen
    others = {"alembic.ini", "requirements.txt", "docker-entrypoint.sh"}
    return {str(path.relative_to(ROOT)) for path in seen} | others


def test_everything_the_service_imports_is_copied_and_nothing_of_the_tests() -> None:
    needed, copied = needed_files(), copied_files()
    assert {"main.py", "server.py", "settings.py", "routes/health.py"} <= needed  # the walk works
    assert needed - copied == set(), "imported or run, but not in the image"
    development = {path for path in copied if path.split("/")[0] in {"tests", "testkit", "bench", ".ci"}}
    private = {
        path
        for path in copied
        if Path(path).name in {".env", ".dev-secret"} or fnmatch.fnmatchcase(Path(path).name, "*.db*")
    }
    assert development | private == set()


def test_the_entry_step_migrates_then_becomes_the_command(tmp_path: Path) -> None:
    entrypoint = exec_form(instruction("ENTRYPOINT"))
    assert len(entrypoint) == 1
    script_name = Path(entrypoint[0]).name
    destinations = {dest for sources, dest in copy_sources() if script_name in sources}
    assert destinations & {"/usr/local/bin/", f"/usr/local/bin/{script_name}", entrypoint[0]}, destinations
    script = ROOT / script_name
    assert os.access(script, os.X_OK), f"{script_name} must be executable (chmod 755)"

    # A stand-in alembic that records its arguments, and a command that prints its PID: with
    # exec, the command is the entry step's own process (and so receives its signals).
    fake = tmp_path / "alembic"
    fake.write_text('#!/bin/sh\necho "$@" > "$ALEMBIC_LOG"\nexit "${ALEMBIC_EXIT:-0}"\n')
    fake.chmod(0o755)
    log = tmp_path / "alembic.log"
    metrics = tmp_path / "metrics"
    (metrics / "old").mkdir(parents=True)
    (metrics / "counter_1.db").write_text("an earlier run's values")
    environment = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "ALEMBIC_LOG": str(log),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    command = [str(script), "sh", "-c", 'echo "$$"']
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)  # noqa: S603
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert int(out) == process.pid, "the entry step must exec the command, not run it as a child"
    assert metrics.is_dir() and list(metrics.iterdir()) == [], "the metrics directory starts empty"
    migrate = log.read_text().split()
    # The same migration as `make migrate`.
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^migrate:.*\n\t\$\(BIN\)/alembic (.+)$", makefile, re.MULTILINE)
    assert recipe and migrate == recipe.group(1).split() == ["upgrade", "head"]
    assert re.search(r"^\s*make migrate\b", "\n".join(readme_block()), re.MULTILINE)

    # A failed migration stops the container before it serves.
    log.unlink()
    failed = subprocess.run(  # noqa: S603
        command, env={**environment, "ALEMBIC_EXIT": "1"}, capture_output=True, text=True, timeout=30
    )
    assert failed.returncode != 0 and failed.stdout == ""


class Probe(http.server.BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Probe.paths.append(self.path)
        self.send_response(Probe.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def probed() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Probe.paths.clear()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_healthcheck_probes_health_and_fails_when_it_fails(probed: int) -> None:
    command = healthcheck_command()
    port = uvicorn_options(image_command())["port"]
    assert instruction("EXPOSE").split() == [str(port)]
    assert f"http://127.0.0.1:{port}/health'" in " ".join(command)
    assert command[0] == "python", "the slim image has no curl: python's urllib probes"
    here = [sys.executable, *command[1:-1], command[-1].replace(f":{port}/", f":{probed}/")]
    # A proxy in the environment is not used for the probe of this container itself.
    environment = {**os.environ, "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    environment.pop("no_proxy", None)
    environment.pop("NO_PROXY", None)

    def probe() -> int:
        return subprocess.run(here, env=environment, capture_output=True, timeout=30).returncode  # noqa: S603

    assert probe() == 0
    Probe.status = 503
    try:
        assert probe() != 0
    finally:
        Probe.status = 200
    assert Probe.paths == ["/health", "/health"]


def test_the_image_sets_only_known_variables() -> None:
    names = set()
    for arguments in (arguments for name, arguments in dockerfile() if name == "ENV"):
        names |= {word.split("=", 1)[0] for word in shlex.split(arguments)}
    python = {name for name in names if name.startswith(("PYTHON", "PIP_"))}
    assert names - python <= SETTINGS
    assert "ENVIRONMENT=production" in instruction("ENV")


# --- compose.yaml ----------------------------------------------------------------------------


def test_compose_has_the_api_postgres_and_redis() -> None:
    document = compose()
    services = document["services"]
    assert set(services) >= {"api", "postgres", "redis"}
    api, postgres, redis = services["api"], services["postgres"], services["redis"]
    assert api["build"] == "."
    assert postgres["image"].startswith("postgres:") and redis["image"].startswith("redis:")
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    volume, _, mount = postgres["volumes"][0].partition(":")
    assert mount == "/var/lib/postgresql/data" and volume in document["volumes"]
    assert api["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_compose_runs_the_api_as_the_image_does() -> None:
    api = compose()["services"]["api"]
    options = uvicorn_options(image_command())
    assert api["ports"] == [f"{options['port']}:{options['port']}"]
    assert api["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
    # The stop signal's grace period outlasts uvicorn's own, so in-flight requests finish.
    assert seconds(api["stop_grace_period"]) > options["timeout_graceful_shutdown"]
    assert api["init"] is True
    assert "command" not in api and "entrypoint" not in api, "the image's own steps, not others"


def test_compose_sets_every_production_setting_of_the_readme() -> None:
    environment = api_environment()
    exports = readme_exports()
    assert set(exports) >= {"ENVIRONMENT", "DATABASE_URL", "ALLOWED_HOSTS", "RATE_LIMIT_STORAGE_URI"}
    assert set(exports) - set(environment) == set()
    assert environment["ENVIRONMENT"] == exports["ENVIRONMENT"] == "production"
    # Every variable is a setting, or one uvicorn reads; none is a typo that nothing reads.
    assert set(environment) - SETTINGS - set(READ_ELSEWHERE) == set()
    # The secret comes from outside, never a default written here.
    assert environment["BETTER_AUTH_SECRET"].startswith("${BETTER_AUTH_SECRET:?")


def test_compose_defaults_make_settings_production_accepts() -> None:
    given = {"BETTER_AUTH_SECRET": TEST_SECRET, "POSTGRES_PASSWORD": "a1b2c3d4e5f6"}
    environment = {name: interpolate(value, given) for name, value in api_environment().items()}
    postgres = compose()["services"]["postgres"]["environment"]
    # Validated as start-up would, from these values alone (no environment, no .env).
    settings = Settings.model_validate(
        {name.lower(): value for name, value in environment.items() if name in SETTINGS}
    )
    assert settings.environment == "production"
    user, db = postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]
    password = interpolate(postgres["POSTGRES_PASSWORD"], given)
    assert settings.database_url == f"postgresql+psycopg2://{user}:{password}@postgres:5432/{db}"
    assert settings.rate_limit_storage_uri.startswith("redis://redis:")
    workers = int(environment["WEB_CONCURRENCY"])
    assert workers >= 1
    assert environment["FORWARDED_ALLOW_IPS"] != "*"
    with pytest.raises(AssertionError, match="BETTER_AUTH_SECRET is required"):
        interpolate(api_environment()["BETTER_AUTH_SECRET"], {})

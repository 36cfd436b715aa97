"""Every shell command in README.md, docs/*.md and integrations/**/*.md runs, or is consistent with the GPU recipes.

Commands come from fenced ``bash``/``sh``/``shell``/``console`` blocks (``$ `` lines in console blocks; backslash
continuations joined; ``#`` comments dropped). A block preceded by ``<!-- docs-test: skip REASON -->`` is left out.
Each command is classified by the tables below (data, not code paths, so new commands and subcommands only need a
row):

- CPU: ``adaptive-ttc ...`` against the embedded model or the vLLM CPU server runs against the server given by
  ``ADAPTIVE_TTC_VLLM_URL`` (``--backend embedded`` becomes that server), with the small limits of ``LIMITS``
  (training and collecting run on a few questions), in one temporary directory per doc (so a block's ``collect``
  feeds its ``train``), and must exit 0. ``make demo DEMO_ARGS=...`` is the demo with those arguments.
- GPU: a command whose backend or scorer is on a GPU server (any other host or port) is not run; its ``--model``
  and its ``prm:URL#model`` must be what ``integrations/vllm/serve-*.sh`` serve on that port.
- Not commands of this library (installers, servers, ``cd``): ``NOT_RUN``, with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "integrations").rglob("*.md")])
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
CPU_PORT = 8765  # scripts/vllm-cpu.sh
PLACEHOLDER_QUESTION = "What is 2 + 3?"

# First words of commands that are not this library's commands, and why they are not run here.
NOT_RUN = {
    "pip": "installs packages",
    "cd": "changes directory",
    "cp": "copies a template",
    "curl": "a look at a server",
    "langgraph": "starts a LangGraph server",
    "kubectl": "deploys to a cluster",
    "make": "installs and runs the suites (make test is CI itself); make demo is run as adaptive-ttc demo",
    "scripts/vllm-cpu.sh": "starts or stops the test server (managed outside the tests)",
    "integrations/vllm/serve-policy.sh": "a GPU server (checked as the source of truth)",
    "integrations/vllm/serve-prm.sh": "a GPU server (checked as the source of truth)",
    "integrations/vllm/one-gpu.sh": "a GPU server (checked as the source of truth)",
}
# Subcommands that run until stopped: checked for consistency only.
LONG_RUNNING = {"serve"}
# Small limits per subcommand: set (replacing the doc's value) on every CPU run.
LIMITS: dict[str, dict[str, str]] = {
    "collect": {"--limit": "12", "--max-tokens": "8", "--grid": "greedy,bon-majority-2", "--no-profile": ""},
    "train": {"--resamples": "2"},
    "evaluate": {"--resamples": "2", "--bootstrap": "20"},
    "generate": {"--max-tokens": "16"},
    "demo": {"--max-tokens": "8", "--problems": "1"},  # 3 policies x 5 problems took 293 s on a slow CPU server
    "profile": {"--decode-tokens": "4", "--sequences": "1,4", "--concurrent": "4"},  # the defaults took 188 s
}
# Options whose value names a server.
BACKEND_OPTIONS = ("--backend", "--real-url")
# Files a doc's commands may use without creating them: copied into the doc's directory first.
SEED_FILES = {"router.zip": ROOT / "src/adaptive_ttc/data/default_router.zip"}
COMMAND_TIMEOUT_S = 600  # a guard against a hang, not a timing check: on a slow CPU server `profile` took over 150 s


@dataclass(frozen=True)
class Command:
    """One documented shell command."""

    doc: str
    line: int
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.argv)}"


def _blocks(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of each shell block not marked ``docs-test: skip``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = re.fullmatch(r"\s*```(\w*)\s*", lines[index])
        if fence is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip().startswith("```"))
        previous = lines[index - 1] if index else ""
        if fence.group(1) in SHELL_LANGUAGES and "docs-test: skip" not in previous:
            yield index + 2, lines[index + 1 : end]
        index = end + 1


def commands(path: Path) -> list[Command]:
    """The shell commands of one doc, in order."""
    found = []
    for first, block in _blocks(path):
        pending, start = "", first
        for offset, raw in enumerate(block):
            line = raw[2:] if raw.startswith("$ ") else raw
            if not pending:
                start = first + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            argv = shlex.split(pending + line, comments=True)
            pending = ""
            if argv:
                found.append(Command(path.relative_to(ROOT).as_posix(), start, tuple(argv)))
    return found


def _strip_env(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The command without leading ``NAME=value`` assignments."""
    index = 0
    while index < len(argv) and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[index]):
        index += 1
    return argv[index:]


def as_library_command(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The ``adaptive-ttc`` argv a documented command amounts to, or ``None`` when it is not one."""
    argv = _strip_env(argv)
    if argv[:2] == ("make", "demo"):
        extra = next((a.split("=", 1)[1] for a in argv[2:] if a.startswith("DEMO_ARGS=")), "")
        return ("adaptive-ttc", "demo", *shlex.split(extra))
    if argv and argv[0] == "adaptive-ttc":
        return argv
    return None


def _option(argv: tuple[str, ...], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _is_cpu(url: str) -> bool:
    parts = urlsplit(url)
    return parts.hostname in {"127.0.0.1", "localhost"} and parts.port == CPU_PORT


def is_gpu(argv: tuple[str, ...]) -> bool:
    """Whether the command talks to a server other than the CPU test server."""
    urls = [u for name in BACKEND_OPTIONS for u in (_option(argv, name) or "").split(",") if "://" in u]
    scorer = _option(argv, "--scorer") or ""
    if scorer.startswith("prm:"):
        urls.append(scorer[4:].split("#", 1)[0])
    return (len(argv) > 1 and argv[1] in LONG_RUNNING) or any(not _is_cpu(u) for u in urls)


def served_models() -> dict[int, str]:
    """Port -> served model name of each GPU recipe (integrations/vllm/serve-*.sh defaults)."""
    served = {}
    for script in sorted((ROOT / "integrations/vllm").glob("serve-*.sh")):
        text = script.read_text()
        model = re.search(r'MODEL="\$\{MODEL:-([^}]+)\}"', text)
        port = re.search(r'PORT="\$\{PORT:-(\d+)\}"', text)
        assert model, f"{script}: no MODEL default found"
        assert port, f"{script}: no PORT default found"
        assert '--served-model-name "$(basename "$MODEL")"' in text, f"{script}: served name is not the basename"
        served[int(port.group(1))] = model.group(1).rsplit("/", 1)[-1]
    return served


def gpu_inconsistencies(argv: tuple[str, ...], served: dict[int, str]) -> list[str]:
    """What in a GPU command disagrees with the recipes: ports nothing serves, model names not served."""
    problems = []
    model = _option(argv, "--model")
    for url in (_option(argv, "--backend") or "").split(","):
        if "://" not in url or _is_cpu(url):
            continue
        port = urlsplit(url).port
        if port not in served:
            problems.append(f"{url}: no recipe serves port {port} (recipes: {served})")
        elif model is not None and model != served[port]:
            problems.append(f"--model {model!r}: {url} serves {served[port]!r}")
    scorer = _option(argv, "--scorer") or ""
    if scorer.startswith("prm:"):
        url, _, name = scorer[4:].partition("#")
        port = urlsplit(url).port
        if port not in served:
            problems.append(f"{scorer}: no recipe serves port {port}")
        elif name and name != served[port]:
            problems.append(f"{scorer}: the PRM recipe on port {port} serves {served[port]!r}, not {name!r}")
    return problems


def with_limits(argv: tuple[str, ...], url: str, model: str) -> tuple[str, ...]:
    """The CPU run of a command: the test server instead of the embedded model, placeholders filled, small limits."""
    args = [PLACEHOLDER_QUESTION if a == "..." else a for a in argv[1:]]
    if _option(tuple(args), "--backend") in (None, "embedded") and args[0] in {"collect", "demo", "generate"}:
        args = _set(args, "--backend", url)
        args = _set(args, "--model", model)
    if _option(tuple(args), "--backend") == "embedded":  # profile --backend embedded
        args = _set(_set(args, "--backend", url), "--model", model)
    backend = _option(tuple(args), "--backend")
    if backend is not None and _is_cpu(backend):  # the documented CPU server: the one this run started
        args = _set(args, "--backend", url)
    for name, value in LIMITS.get(args[0], {}).items():
        args = _set(args, name, value)
    return tuple(args)


def _set(args: list[str], name: str, value: str) -> list[str]:
    if name in args:
        index = args.index(name)
        if value == "":
            return args
        return [*args[: index + 1], value, *args[index + 2 :]]
    return [*args, name] if value == "" else [*args, name, value]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("adaptive-ttc")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "adaptive_ttc.cli"]


def classify(found: list[Command]) -> list[tuple[Command, tuple[str, ...], bool]]:
    """(command, its adaptive-ttc argv, whether it is a GPU command) of each library command, in doc order.

    A command that reads what a GPU command of the same doc wrote (its ``--out``) is a GPU command too.
    """
    classified, gpu_outputs = [], set()
    for command in found:
        argv = as_library_command(command.argv)
        if argv is None:
            continue
        gpu = is_gpu(argv) or any(arg in gpu_outputs for arg in argv)
        if gpu and _option(argv, "--out"):
            gpu_outputs.add(_option(argv, "--out"))
        classified.append((command, argv, gpu))
    return classified


ALL = [c for doc in DOCS for c in commands(doc)]
LIBRARY = [row for doc in DOCS for row in classify(commands(doc))]


def test_every_command_is_classified() -> None:
    unknown = [
        str(c)
        for c in ALL
        if as_library_command(c.argv) is None and _strip_env(c.argv)[:1] and _strip_env(c.argv)[0] not in NOT_RUN
    ]
    assert not unknown, (
        "documented commands the docs test does not know (add them to NOT_RUN or LIMITS):\n" + "\n".join(unknown)
    )
    assert LIBRARY, "no adaptive-ttc commands found in the docs"


@pytest.mark.parametrize(("command", "argv"), [(c, argv) for c, argv, gpu in LIBRARY if gpu], ids=str)
def test_gpu_commands_match_the_recipes(command: Command, argv: tuple[str, ...]) -> None:
    assert not gpu_inconsistencies(argv, served_models()), f"{command}: {gpu_inconsistencies(argv, served_models())}"


def test_the_model_name_check_catches_a_hugging_face_id() -> None:
    served = served_models()
    wrong = ("adaptive-ttc", "demo", "--backend", "http://127.0.0.1:8000/v1", "--model", "Qwen/Qwen2.5-1.5B-Instruct")
    assert gpu_inconsistencies(wrong, served)
    prm = ("adaptive-ttc", "collect", "--scorer", "prm:http://127.0.0.1:8001/v1#Qwen/Qwen2.5-Math-PRM-7B")
    assert gpu_inconsistencies(prm, served)
    assert not gpu_inconsistencies(("adaptive-ttc", "demo", "--backend", "http://h:8000/v1"), served)


@pytest.mark.vllm
@pytest.mark.parametrize("doc", sorted({c.doc for c, _, gpu in LIBRARY if not gpu}))
def test_cpu_commands_run(doc: str, vllm_url: str, vllm_model: str, tmp_path: Path) -> None:
    for name, source in SEED_FILES.items():
        shutil.copy(source, tmp_path / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    ran: set[tuple[str, ...]] = set()
    for command, argv, gpu in LIBRARY:
        if command.doc != doc or gpu:
            continue
        args = with_limits(argv, vllm_url, vllm_model)
        if args in ran:
            continue
        ran.add(args)
        started = time.monotonic()
        done = subprocess.run(
            [*_cli(), *args],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        print(f"{time.monotonic() - started:6.1f} s  {command}")  # shown with -s or on failure
        assert done.returncode == 0, f"{command}\nran: {shlex.join(args)}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"


def test_the_documented_cpu_server_becomes_the_server_of_this_run() -> None:
    argv = ("adaptive-ttc", "generate", "Q", "--backend", f"http://127.0.0.1:{CPU_PORT}/v1", "--model", "m")
    args = with_limits(argv, "http://127.0.0.1:9999/v1", "m")
    assert _option(args, "--backend") == "http://127.0.0.1:9999/v1"

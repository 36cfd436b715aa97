"""Corrupt router and profile files get a clear ``ConfigurationError``, not a crash from deep inside."""

from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptive_ttc import AdaptiveChatModel, ConfigurationError, FakeBackend
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.router.router import Router
from tests.unit_tests.router.test_router import GRID, synthetic_log

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("router") / "router.zip"
    Router(GRID).fit(synthetic_log()).save(path)
    return path


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "profile.json"
    BackendProfile("b", "m", request_overhead_s=0.1, prefill_tokens_per_s=100.0, decode_tokens_per_s={1: 10.0}).save(
        path
    )
    return path


def _rezip(source: Path, target: Path, **members: bytes) -> Path:
    with zipfile.ZipFile(source) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    contents.update(members)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in contents.items():
            if data:
                archive.writestr(name, data)
    return target


def _meta(source: Path, **changes: Any) -> bytes:
    with zipfile.ZipFile(source) as archive:
        meta = json.loads(archive.read("meta.json"))
    meta.update(changes)
    return json.dumps(meta).encode()


def _flip(data: bytes, offset: int) -> bytes:
    """``data`` with the byte at ``offset`` inverted (28: the first member's extra-field length)."""
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


ROUTER_CORRUPTIONS: list[Any] = [
    pytest.param(lambda src, dst: dst.write_bytes(b""), id="empty"),
    pytest.param(lambda src, dst: dst.write_bytes(src.read_bytes()[:100]), id="truncated"),
    pytest.param(lambda src, dst: dst.write_text("not a zip"), id="text"),
    pytest.param(lambda src, dst: _rezip(src, dst, **{"meta.json": b"{"}), id="meta-not-json"),
    pytest.param(lambda src, dst: _rezip(src, dst, **{"meta.json": b"[]"}), id="meta-a-list"),
    pytest.param(lambda src, dst: _rezip(src, dst, **{"meta.json": _meta(src, version=99)}), id="newer-version"),
    pytest.param(lambda src, dst: _rezip(src, dst, **{"meta.json": _meta(src, grid=["bon-x"])}), id="grid-label"),
    pytest.param(lambda src, dst: _rezip(src, dst, **{"arrays.npz": b""}), id="models-missing"),
    pytest.param(
        lambda src, dst: dst.write_bytes(_flip(src.read_bytes(), 28)),
        id="zip-header-flipped",
    ),
    pytest.param(
        lambda src, dst: _rezip(src, dst, **{"meta.json": _meta(src, grid=None)}),
        id="grid-null",
    ),
    pytest.param(
        lambda src, dst: _rezip(src, dst, **{"meta.json": _meta(src, grid=[1, 2])}),
        id="grid-numbers",
    ),
    pytest.param(
        lambda src, dst: _rezip(src, dst, **{"meta.json": _meta(src, lambdas={"x": 1})}),
        id="lambdas-keys",
    ),
    pytest.param(
        lambda src, dst: _rezip(src, dst, **{"meta.json": _meta(src, features=3)}),
        id="features-number",
    ),
    pytest.param(
        lambda src, dst: _rezip(src, dst, **{"arrays.npz": b"garbage"}),
        id="models-garbage",
    ),
    pytest.param(
        lambda src, dst: _rezip(src, dst, **{"arrays.npz": pickle.dumps({"x": 1})}),
        id="models-shape",
    ),
]


@pytest.mark.parametrize("corrupt", ROUTER_CORRUPTIONS)
def test_a_corrupt_router_file_is_a_configuration_error(
    router_file: Path, tmp_path: Path, corrupt: Callable[[Path, Path], object]
) -> None:
    target = tmp_path / "corrupt.zip"
    corrupt(router_file, target)
    with pytest.raises(ConfigurationError, match=r"\S"):
        Router.load(target)


def test_a_corrupt_router_file_fails_the_first_call_of_a_model_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_text("not a router")
    model = AdaptiveChatModel(backend=FakeBackend(), router=str(bad))
    try:
        with pytest.raises(ConfigurationError, match="not a readable adaptive-ttc router file"):
            model.invoke("What is 6*7?")
    finally:
        model.close()


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_are_not_a_router(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "r.zip"
    path.write_bytes(data)
    with pytest.raises(ConfigurationError):
        Router.load(path)


@FUZZ
@given(offset=st.integers(0, 10**6), mask=st.integers(1, 255))
def test_any_flipped_byte_of_a_router_file_loads_or_is_a_configuration_error(
    router_file: Path, tmp_path_factory: pytest.TempPathFactory, offset: int, mask: int
) -> None:
    data = bytearray(router_file.read_bytes())
    data[offset % len(data)] ^= mask
    path = tmp_path_factory.mktemp("flip") / "r.zip"
    path.write_bytes(bytes(data))
    with contextlib.suppress(ConfigurationError):  # damaged; flips in unused header fields may still load
        Router.load(path)


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(["grid", "features", "lambdas", "sklearn", "extra"]), JSON))
def test_any_router_meta_loads_or_is_a_configuration_error(
    router_file: Path, tmp_path_factory: pytest.TempPathFactory, changes: dict[str, Any]
) -> None:
    path = _rezip(
        router_file, tmp_path_factory.mktemp("meta") / "r.zip", **{"meta.json": _meta(router_file, **changes)}
    )
    try:
        Router.load(path)
    except ConfigurationError as exc:
        assert str(exc)  # noqa: PT017 - any other exception fails the test by escaping


PROFILE_CORRUPTIONS: list[Any] = [
    pytest.param(lambda data: "{", id="not-json"),
    pytest.param(lambda data: {**data, "version": 99}, id="newer-version"),
    pytest.param(lambda data: {k: v for k, v in data.items() if k != "format"}, id="no-format"),
    pytest.param(lambda data: {**data, "surprise": 1}, id="extra-field"),
    pytest.param(lambda data: {**data, "decode_tokens_per_s": {"1": -5}}, id="negative-speed"),
    pytest.param(lambda data: [], id="a-list"),
    pytest.param(lambda data: '"text"', id="a-string"),
    pytest.param(lambda data: {**data, "decode_tokens_per_s": None}, id="speeds-null"),
    pytest.param(lambda data: {**data, "decode_tokens_per_s": {"a": 1}}, id="speeds-key"),
    pytest.param(lambda data: {**data, "decode_tokens_per_s": {"1": "x"}}, id="speeds-value"),
    pytest.param(
        lambda data: {k: v for k, v in data.items() if k != "decode_tokens_per_s"},
        id="speeds-missing",
    ),
]


@pytest.mark.parametrize("corrupt", PROFILE_CORRUPTIONS)
def test_a_corrupt_profile_file_is_a_configuration_error(
    profile_file: Path, tmp_path: Path, corrupt: Callable[[dict[str, Any]], Any]
) -> None:
    changed = corrupt(json.loads(profile_file.read_text()))
    target = tmp_path / "corrupt.json"
    target.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(ConfigurationError, match=r"\S"):
        BackendProfile.load(target)


@FUZZ
@given(data=st.dictionaries(st.text(max_size=8), JSON, max_size=5))
def test_any_json_object_without_the_profile_header_is_refused(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]
) -> None:
    data.pop("format", None)
    path = tmp_path_factory.mktemp("json") / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError):
        BackendProfile.load(path)

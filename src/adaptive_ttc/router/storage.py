"""Router file I/O: ``meta.json`` and ``arrays.npz`` in a zip, read without unpickling anything.

See ``router.py`` for the format. Every damaged or foreign file is a ``ConfigurationError`` that says what to do.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.domain import GateLimits
from adaptive_ttc.router.features import Matrix

__all__ = ["ROUTER_FORMAT", "ROUTER_VERSION", "check_meta", "gate_limits", "read", "write"]

ROUTER_FORMAT = "adaptive-ttc-router"
ROUTER_VERSION = 2
_ARRAYS = "arrays.npz"


def write(path: str | Path, document: dict[str, Any], arrays: Mapping[str, Matrix]) -> None:
    """Write ``meta.json`` (``document`` with the format and version) and ``arrays.npz``."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy types **kwds as its allow_pickle flag
    header = {"format": ROUTER_FORMAT, "version": ROUTER_VERSION, **document}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.json", json.dumps(header, indent=2, default=_json_number))
        archive.writestr(_ARRAYS, buffer.getvalue())


def check_meta(meta: dict[str, Any], path: str | Path) -> None:
    """The fields ``Router.load`` reads, with the types it expects: a damaged file is an error, not a crash."""
    grid, features, lambdas = meta.get("grid"), meta.get("features"), meta.get("lambdas")
    problems = []
    if not isinstance(grid, list) or not all(isinstance(label, str) for label in grid):
        problems.append("grid is not a list of configuration labels")
    if not isinstance(features, str):
        problems.append("features is not an extractor name")
    if not isinstance(lambdas, dict) or set(lambdas) != {"tokens", "latency"}:
        problems.append("lambdas is not {tokens, latency}")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in lambdas.values()):
        problems.append("lambdas are not numbers")
    if meta.get("profile") is not None and not isinstance(meta.get("profile"), dict):
        problems.append("profile is not an object")
    if meta.get("fallback") is not None and not isinstance(meta.get("fallback"), str):
        problems.append("fallback is not a configuration label")
    if meta.get("meta") is not None and not isinstance(meta.get("meta"), dict):
        problems.append("meta is not an object")
    if problems:
        raise ConfigurationError(f"router file {path} is damaged: {'; '.join(problems)}; retrain it")


def gate_limits(value: Any, path: str | Path) -> GateLimits:
    if value is None:
        return GateLimits()
    try:
        if not isinstance(value, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        ):
            raise TypeError("not an object of numbers")
        return GateLimits(**value)
    except (TypeError, ConfigurationError) as exc:
        raise ConfigurationError(f"router file {path} has damaged gate limits ({exc}); retrain it") from exc


def _json_number(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"router metadata holds a {type(value).__name__}, which JSON cannot store")


def read(path: Path) -> tuple[dict[str, Any], Mapping[str, Matrix]]:
    """``meta.json`` (checked first) and the arrays; no byte of a version 1 file's pickle is ever read."""
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("meta.json"))
            _check_version(meta, path)
            with np.load(io.BytesIO(archive.read(_ARRAYS)), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
    except ConfigurationError:
        raise
    except (OSError, KeyError, zipfile.BadZipFile, ValueError, zlib.error, EOFError) as exc:
        raise ConfigurationError(
            f"{path} is not a readable adaptive-ttc router file ({exc}); train one with `adaptive-ttc train`"
        ) from exc
    return meta, arrays


def _check_version(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != ROUTER_FORMAT:
        raise ConfigurationError(f"{path} is not an adaptive-ttc router file")
    version = meta.get("version")
    if version == 1:
        raise ConfigurationError(
            f"router {path} is format version 1, which stored pickled models; this adaptive-ttc never loads "
            "pickles (loading one can run code). Retrain it from its generation log: "
            "`adaptive-ttc train LOG --out ROUTER.zip`"
        )
    if version != ROUTER_VERSION:
        raise ConfigurationError(
            f"router {path} has format version {version!r}; this adaptive-ttc reads version "
            f"{ROUTER_VERSION}. Retrain it with `adaptive-ttc train LOG --out ROUTER.zip`"
        )

"""``adaptive-ttc profile``: measure a backend's speed and save its profile."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from adaptive_ttc.cli._backend import add_backend_options, backend_from

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    prof: argparse.ArgumentParser = commands.add_parser(
        "profile", help="measure a backend's speed and save its profile"
    )
    add_backend_options(prof, timeout=300.0)
    prof.add_argument("--out", required=True, help="where to write the profile (JSON)")
    prof.add_argument("--decode-tokens", type=int, default=64, help="tokens decoded per measurement")
    return prof


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from adaptive_ttc.backends.profiling import measure_profile  # noqa: PLC0415

    backend = await backend_from(args)
    try:
        profile = await measure_profile(backend, args.backend, decode_tokens=args.decode_tokens)
    finally:
        await backend.aclose()
    profile.save(args.out)
    return {"profile": args.out, **dataclasses.asdict(profile)}

"""``adaptive-ttc profile``: measure a backend's speed and save its profile."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from adaptive_ttc.cli._backend import add_backend_options, backend_from
from adaptive_ttc.errors import ConfigurationError

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    prof: argparse.ArgumentParser = commands.add_parser(
        "profile", help="measure a backend's speed and save its profile"
    )
    add_backend_options(prof, timeout=300.0)
    prof.add_argument("--out", required=True, help="where to write the profile (JSON)")
    prof.add_argument("--decode-tokens", type=int, default=64, help="tokens decoded per measurement")
    prof.add_argument(
        "--sequences",
        default="1,2,4,8,16,32",
        help="batch sizes whose decode speed is measured (one request of n samples each), comma-separated",
    )
    prof.add_argument(
        "--concurrent",
        default="8,16,32",
        help="numbers of distinct requests sent at once, comma-separated; 'none' to skip (the latency "
        "correction's prior then comes from the batch sizes)",
    )
    return prof


def counts(text: str, option: str, *, empty: bool = False) -> tuple[int, ...]:
    """``"1,2,4"`` as ``(1, 2, 4)``: distinct integers >= 1, sorted; ``"none"`` as ``()`` where ``empty``."""
    if empty and text.strip().lower() == "none":
        return ()
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        allowed = " (or 'none')" if empty else ""
        raise ConfigurationError(f"{option} takes integers >= 1 separated by commas{allowed}, got {text!r}")
    return tuple(sorted(set(values)))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from adaptive_ttc.backends.profiling import check_profile_settings, measure_profile  # noqa: PLC0415

    sequences = counts(args.sequences, "--sequences")
    concurrent = counts(args.concurrent, "--concurrent", empty=True)
    check_profile_settings(sequences, concurrent, args.decode_tokens)
    backend = await backend_from(args)  # after the checks: nothing is sent on bad arguments
    try:
        profile = await measure_profile(
            backend, args.backend, sequences=sequences, concurrent=concurrent, decode_tokens=args.decode_tokens
        )
    finally:
        await backend.aclose()
    profile.save(args.out)
    return {"profile": args.out, **dataclasses.asdict(profile)}

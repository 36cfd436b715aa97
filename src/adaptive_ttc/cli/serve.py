"""``adaptive-ttc serve``: the OpenAI-compatible server; its command lives with the server (``server/command.py``)."""

from __future__ import annotations

from adaptive_ttc.server.command import add_parser, run

__all__ = ["add_parser", "run"]

"""Evaluation: datasets and graders, generation logs (collect), router training and replay evaluation.

The command line drives it (``adaptive-ttc collect``, ``train``, ``evaluate``; see ``docs/evaluation.md``);
the modules are importable for scripts and notebooks.
"""

from adaptive_ttc.eval.concurrency import ConcurrentLatencyWarning
from adaptive_ttc.eval.datasets import Question, load_dataset
from adaptive_ttc.eval.graders import Grader, load_grader
from adaptive_ttc.eval.log import GenerationLog, LogHeader, TruncatedLogWarning, read_log

__all__ = [
    "ConcurrentLatencyWarning",
    "GenerationLog",
    "Grader",
    "LogHeader",
    "Question",
    "TruncatedLogWarning",
    "load_dataset",
    "load_grader",
    "read_log",
]

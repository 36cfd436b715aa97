"""Scorers: a PRM served by vLLM, self-certainty / log-probabilities, and an LLM judge."""

from adaptive_ttc.scoring.base import AGGREGATIONS, Aggregation, Score, Scored, ScoreItem, Scorer, aggregate
from adaptive_ttc.scoring.judge import DEFAULT_JUDGE_TEMPLATE, JudgeScorer, yes_probability
from adaptive_ttc.scoring.prm import DEFAULT_PRM_SYSTEM_PROMPT, PRMScorer, build_prm_input
from adaptive_ttc.scoring.registry import SCORER_SPECS, make_scorer
from adaptive_ttc.scoring.self_certainty import Measure, SelfCertaintyScorer

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_JUDGE_TEMPLATE",
    "DEFAULT_PRM_SYSTEM_PROMPT",
    "SCORER_SPECS",
    "Aggregation",
    "JudgeScorer",
    "Measure",
    "PRMScorer",
    "Score",
    "ScoreItem",
    "Scored",
    "Scorer",
    "SelfCertaintyScorer",
    "aggregate",
    "build_prm_input",
    "make_scorer",
    "yes_probability",
]

"""``adaptive-ttc demo``: a budgeted LangGraph agent on word problems, adaptive against fixed strategies.

``agent`` builds the agent and runs each policy under the same budgets; ``view`` draws a problem's calls and
budgets live on a terminal; ``problems`` loads the word problems.
"""

from adaptive_ttc.demo.agent import DEMO_PROBLEMS, PolicyRun, ProblemRun, build_agent, run_demo, solve
from adaptive_ttc.demo.problems import word_problems

__all__ = ["DEMO_PROBLEMS", "PolicyRun", "ProblemRun", "build_agent", "run_demo", "solve", "word_problems"]

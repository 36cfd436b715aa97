"""``adaptive-ttc demo``: a budgeted LangGraph agent on word problems, adaptive against fixed strategies.

``agent`` builds the agent and runs each policy under the same budgets; ``view`` draws a problem's calls and
budgets live on a terminal.
"""

from adaptive_ttc.demo.agent import PROBLEMS, PolicyRun, build_agent, run_demo

__all__ = ["PROBLEMS", "PolicyRun", "build_agent", "run_demo"]

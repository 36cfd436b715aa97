"""LangChain / LangGraph integration: the chat model and workflow budget scopes."""

from adaptive_ttc.budget.scope import BUDGET_KEY, BudgetScope, budget, current_ledger
from adaptive_ttc.langchain.chat_model import AdaptiveChatModel

__all__ = ["BUDGET_KEY", "AdaptiveChatModel", "BudgetScope", "budget", "current_ledger"]

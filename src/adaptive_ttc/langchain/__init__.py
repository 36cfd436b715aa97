"""LangChain / LangGraph integration: the chat model and workflow budget scopes."""

from adaptive_ttc.langchain.chat_model import AdaptiveChatModel
from adaptive_ttc.langchain.scope import BUDGET_KEY, BudgetScope, budget, current_ledger

__all__ = ["BUDGET_KEY", "AdaptiveChatModel", "BudgetScope", "budget", "current_ledger"]

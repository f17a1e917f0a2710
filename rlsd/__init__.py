"""rlsd: retrain small models with RL from verifiable rewards plus self-distilled token credit."""

__version__ = "0.1.0"

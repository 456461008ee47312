"""The LLM layer: litellm's Router per tier, budgets, call booking, the offline provider, faults."""

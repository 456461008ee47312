"""The swarm: objectives, plans, steps, manager, workers, critic, engine and LLM layer."""

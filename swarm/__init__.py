"""The swarm: objectives, plans, steps, manager, workers, critic, engine and LLM layer."""
import os

# litellm fetches its cost map from the internet at import unless told not to; we never do.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

"""The agents: the manager (planner), workers, critic and troubleshooter; roles, tools, prompts."""

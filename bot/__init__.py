"""The edge: chat adapters (Slack, Discord, console), the CLI and the composition root."""

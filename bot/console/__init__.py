"""The console adapter: the same neutral contract as Slack and Discord, in a terminal."""

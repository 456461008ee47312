"""The Discord edge: discord.py over the gateway, embeds and buttons, `/swarm` app commands."""

"""The services: the neutral entry points the chat edges call, and the policy behind them."""

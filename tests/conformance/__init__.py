"""One scenario suite every chat adapter passes, each through its own fake platform."""

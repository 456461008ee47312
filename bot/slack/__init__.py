"""The Slack edge: bolt (async) over HTTP or Socket Mode, Block Kit rendering, OAuth installs."""

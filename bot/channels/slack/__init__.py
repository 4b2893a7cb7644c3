"""Slack: events, Block Kit rendering, the Web API, the adapter and the agent channel."""

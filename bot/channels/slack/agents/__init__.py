"""The Slack agent channel: handoff cards, agents' clicks and thread replies."""

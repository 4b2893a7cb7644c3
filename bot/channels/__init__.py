"""Channel adapters behind the core's ports: LINE and Slack."""

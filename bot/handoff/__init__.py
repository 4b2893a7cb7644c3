"""Handing conversations to human agents: the desk, summaries for agents, agent hours."""

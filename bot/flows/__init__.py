"""Flows as data: the YAML schema, loading with file:line errors, lint, graph, JSON Schema."""

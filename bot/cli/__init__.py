"""The `yarigai` command line, one module per command group."""

"""Everything HTTP: the FastAPI app, the raw ASGI webhook path, the web chat API, the console."""

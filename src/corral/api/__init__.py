"""The control plane's HTTP edge: the FastAPI app, its routes, schemas and error mapping."""

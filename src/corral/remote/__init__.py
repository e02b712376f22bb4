"""Talking to a corral control plane from the CLI: saved remotes and an API client."""

"""One module per command group; each holds the typer commands and nothing below them."""

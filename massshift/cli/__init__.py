"""The command line: thin typer wrappers over library functions."""

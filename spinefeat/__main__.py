"""`python -m spinefeat ...` runs the command line."""

from .cli import app

app()

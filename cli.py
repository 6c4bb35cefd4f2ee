"""Thin launcher so `python cli.py ...` works from a checkout."""

from spinefeat.cli import app

if __name__ == "__main__":
    app()

"""Alembic migrations of alpaca-bot's database (run with `alpaca-bot migrate`)."""

"""The engine and session types, for code above store that holds them but builds no SQL (the
API, whose import-linter contract keeps SQLAlchemy and SQLModel out)."""

from sqlalchemy import Engine
from sqlmodel import Session

__all__ = ["Engine", "Session"]

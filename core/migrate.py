"""``python -m core.migrate``: bring the configured database's schema up to date."""

from core.db import migrate

if __name__ == "__main__":
    migrate()

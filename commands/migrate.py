"""``python -m commands.migrate``: bring the configured database's schema up to date."""

from store.db import migrate

if __name__ == "__main__":
    migrate()

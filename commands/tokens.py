"""``convlab token``: API tokens, made on the server straight in its database.

The server's distribution adds this app to the client's ``convlab`` command through the
``convlab.commands`` entry-point group (pyproject.toml), so the client imports nothing of it.
"""

from pathlib import Path

import typer

from core.config import Settings
from store.db import Engine, get_engine, is_sqlite, migrate, session_scope, sqlite_file_of
from store.tokens import InvalidUser, create_token, list_tokens, revoke

app = typer.Typer(help="API tokens (needed when CONVLAB_AUTH is on).", no_args_is_help=True)


def _database() -> Engine:
    """The server's database, migrated; refuses, creating nothing, where there is none (run
    from another folder, the default SQLite file would be a new and empty one)."""
    url = Settings().resolved_database_url
    database = sqlite_file_of(url) if is_sqlite(url) else None
    if is_sqlite(url) and not Path(database or "").is_file():
        typer.echo(
            f"No convlab database at {database}. Run this in the folder you started the "
            "server from, or set CONVLAB_HOME (or CONVLAB_DATABASE_URL) as the server has it.",
            err=True,
        )
        raise typer.Exit(2)
    engine = get_engine()
    migrate(engine)
    return engine


@app.command("create")
def token_create(
    user: str = typer.Option(..., "--user", help="Who the token acts for."),
    admin: bool = typer.Option(False, "--admin", help="May cancel and delete anyone's work."),
) -> None:
    """Create a token and print it once; only its hash is stored."""
    with session_scope(_database()) as session:
        try:
            row, text = create_token(session, user=user, admin=admin)
        except InvalidUser as exc:
            raise typer.BadParameter(str(exc), param_hint="--user") from None
    typer.echo(text)
    typer.echo(f"token {row.id} for {user}{' (admin)' if admin else ''}; shown only now", err=True)


@app.command("list")
def token_list() -> None:
    """Tokens by id, user and state (never their secrets)."""
    with session_scope(_database()) as session:
        for row in list_tokens(session):
            state = "revoked" if row.revoked_at else "active"
            role = "admin" if row.admin else "user"
            typer.echo(f"{row.id}  {row.user}  {role}  {state}  {row.created_at:%Y-%m-%d}")


@app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (the part after 'clt_')."""
    with session_scope(_database()) as session:
        if not revoke(session, token_id):
            typer.echo(f"No active token {token_id}.", err=True)
            raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")

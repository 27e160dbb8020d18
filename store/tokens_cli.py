"""``convlab token``: API tokens, made on the server straight in its database.

The server's distribution adds this app to the client's ``convlab`` command through the
``convlab.commands`` entry-point group (pyproject.toml), so the client imports nothing of it.
"""

import typer

from store.db import get_engine, migrate, session_scope
from store.tokens import InvalidUser, create_token, list_tokens, revoke

app = typer.Typer(help="API tokens (needed when CONVLAB_AUTH is on).", no_args_is_help=True)


@app.command("create")
def token_create(
    user: str = typer.Option(..., "--user", help="Who the token acts for."),
    admin: bool = typer.Option(False, "--admin", help="May cancel and delete anyone's work."),
) -> None:
    """Create a token and print it once; only its hash is stored."""
    migrate()
    with session_scope(get_engine()) as session:
        try:
            row, text = create_token(session, user=user, admin=admin)
        except InvalidUser as exc:
            raise typer.BadParameter(str(exc), param_hint="--user") from None
    typer.echo(text)
    typer.echo(f"token {row.id} for {user}{' (admin)' if admin else ''}; shown only now", err=True)


@app.command("list")
def token_list() -> None:
    """Tokens by id, user and state (never their secrets)."""
    migrate()
    with session_scope(get_engine()) as session:
        for row in list_tokens(session):
            state = "revoked" if row.revoked_at else "active"
            role = "admin" if row.admin else "user"
            typer.echo(f"{row.id}  {row.user}  {role}  {state}  {row.created_at:%Y-%m-%d}")


@app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (the part after 'clt_')."""
    migrate()
    with session_scope(get_engine()) as session:
        if not revoke(session, token_id):
            typer.echo(f"No active token {token_id}.", err=True)
            raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")

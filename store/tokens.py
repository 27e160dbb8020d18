"""Bearer tokens: ``clt_<id>_<secret>``; the database keeps the id, the user and a SHA-256 of
the secret (secrets are 256 random bits, so a fast hash is enough), compared in constant time."""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlmodel import Session, col, select

from store.tables import ApiToken, utcnow

USER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class InvalidUser(ValueError):
    """A user name that is not lower-case letters, digits, '_', '.' or '-' (at most 64)."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    user: str
    admin: bool

    def may_change(self, owner: str | None) -> bool:
        return self.admin or owner == self.user


def create_token(session: Session, *, user: str, admin: bool) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the token text, which is never stored."""
    if not USER_NAME.fullmatch(user):
        raise InvalidUser(f"{user!r} is not a user name: use a-z, 0-9, '_', '.', '-' (max 64)")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = ApiToken(id=token_id, user=user, admin=admin, secret_sha256=_digest(secret))
    session.add(row)
    session.commit()
    return row, f"clt_{token_id}_{secret}"


def authenticate(session: Session, presented: str) -> Principal | None:
    """The principal a presented token stands for, or None (unknown, wrong or revoked)."""
    prefix, _, rest = presented.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != "clt" or not token_id or not secret:
        return None
    row = session.get(ApiToken, token_id)
    expected = row.secret_sha256 if row is not None else _digest("")
    matches = hmac.compare_digest(_digest(secret), expected)
    if row is None or not matches or row.revoked_at is not None:
        return None
    return Principal(row.user, row.admin)


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(col(ApiToken.created_at))))


def revoke(session: Session, token_id: str) -> bool:
    """Revoke a token; False if there is no such live token."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.add(row)
    session.commit()
    return True


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

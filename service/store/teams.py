"""Teams and their API keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from service import auth
from service.db import begin_write
from service.errors import Conflict, NotFound
from service.models import (
    ApiKeyRow,
    TeamRow,
    utcnow,
)
from service.schemas import (
    ApiKeyRecord,
    TeamInfo,
)
from service.store._common import (
    _new_id,
)

# --- teams and API keys -------------------------------------------------------


def create_team(
    session: Session,
    name: str,
    *,
    max_upload_bytes: int | None = None,
    max_queued_analyses: int | None = None,
) -> TeamInfo:
    """A new team; its limits default to the settings' when None."""
    begin_write(session)
    if session.scalar(select(TeamRow.id).where(TeamRow.name == name)):
        raise Conflict(f"a team named {name!r} exists already", code="team_exists")
    row = TeamRow(
        id=_new_id(),
        name=name,
        max_upload_bytes=max_upload_bytes,
        max_queued_analyses=max_queued_analyses,
    )
    session.add(row)
    session.flush()
    return TeamInfo(row.id, row.name)


def get_team(session: Session, team: str) -> TeamInfo | None:
    """The team with this name or id."""
    row = session.scalar(
        select(TeamRow).where(or_(TeamRow.name == team, TeamRow.id == team))
    )
    return TeamInfo(row.id, row.name) if row else None


def create_api_key(
    session: Session, team: str, scopes: str | list[str] | tuple[str, ...]
) -> tuple[str, str]:
    """``(key_id, plaintext)`` for the team named ``team`` (or with that id).

    Only the sha256 of the plaintext is stored: show the plaintext once.
    """
    begin_write(session)
    found = get_team(session, team)
    if found is None:
        raise NotFound(f"team {team!r} not found; create it first")
    key_id, plaintext, key_hash = auth.new_token()
    session.add(
        ApiKeyRow(
            id=key_id,
            team_id=found.id,
            key_hash=key_hash,
            scopes=",".join(auth.parse_scopes(scopes)),
        )
    )
    session.flush()
    return key_id, plaintext


def revoke_api_key(session: Session, key_id: str) -> bool:
    """Revoke a key; False when it does not exist or was revoked already."""
    begin_write(session)
    row = session.get(ApiKeyRow, key_id, with_for_update=True)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.flush()
    return True


def get_api_key(session: Session, key_id: str) -> ApiKeyRecord | None:
    found = session.execute(
        select(ApiKeyRow, TeamRow)
        .join(TeamRow, TeamRow.id == ApiKeyRow.team_id)
        .where(ApiKeyRow.id == key_id)
    ).first()
    if found is None:
        return None
    key, team = found
    return ApiKeyRecord(
        key_id=key.id,
        team_id=key.team_id,
        key_hash=key.key_hash,
        scopes=tuple(key.scopes.split(",")),
        revoked=key.revoked_at is not None,
        team_max_upload_bytes=team.max_upload_bytes,
        team_max_queued_analyses=team.max_queued_analyses,
    )


def api_key_for_token(session: Session, token: str) -> ApiKeyRecord | None:
    """The key a bearer token names, when the token's hash matches (compared in
    constant time, also when no such key exists); None otherwise. A revoked key is
    returned: the caller says so."""
    key_id = auth.key_id_of(token)
    record = get_api_key(session, key_id) if key_id else None
    if not auth.token_matches(token, record.key_hash if record else None):
        return None
    return record


def list_teams(session: Session) -> list[dict[str, Any]]:
    """Every team by name: id, name, limits (None: the settings'), active keys."""
    active = (
        select(ApiKeyRow.team_id, func.count().label("n"))
        .where(ApiKeyRow.revoked_at.is_(None))
        .group_by(ApiKeyRow.team_id)
        .subquery()
    )
    rows = session.execute(
        select(TeamRow, func.coalesce(active.c.n, 0))
        .outerjoin(active, active.c.team_id == TeamRow.id)
        .order_by(TeamRow.name)
    )
    return [
        {
            "id": team.id,
            "name": team.name,
            "max_upload_bytes": team.max_upload_bytes,
            "max_queued_analyses": team.max_queued_analyses,
            "active_keys": int(n),
            "created_at": team.created_at,
        }
        for team, n in rows
    ]


def list_api_keys(
    session: Session, team: str | None = None, *, revoked: bool = False
) -> list[dict[str, Any]]:
    """Keys (never their hash or secret): id, team, scopes, created, revoked;
    of one team (name or id) when given, NotFound if there is no such team;
    revoked keys only when ``revoked``."""
    query = select(ApiKeyRow, TeamRow.name).join(TeamRow)
    if team is not None:
        found = get_team(session, team)
        if found is None:
            raise NotFound(f"no team {team!r} (name or id)")
        query = query.where(ApiKeyRow.team_id == found.id)
    if not revoked:
        query = query.where(ApiKeyRow.revoked_at.is_(None))
    rows = session.execute(query.order_by(TeamRow.name, ApiKeyRow.created_at))
    return [
        {
            "id": key.id,
            "team": name,
            "scopes": key.scopes,
            "created_at": key.created_at,
            "revoked_at": key.revoked_at,
        }
        for key, name in rows
    ]

"""Routes of the users service: register, log in, refresh, log out, profile, personal access
tokens, admin."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from energy_tracker.core.auth import (
    DUMMY_PASSWORD_HASH,
    hash_password,
    issue_access_token,
    new_personal_token,
    new_refresh_token,
    secret_digest,
    verify_password,
)
from energy_tracker.core.authz import Action, Caller
from energy_tracker.core.credentials import CredentialCache, credentials
from energy_tracker.core.errors import ApiError
from energy_tracker.core.http import answers, authorized, not_found, unauthorized
from energy_tracker.core.stores.metadata import Conflict
from energy_tracker.services.users import household_api
from energy_tracker.services.users.household_api import households
from energy_tracker.services.users.household_store import HouseholdStore
from energy_tracker.services.users.models import AccessToken, User
from energy_tracker.services.users.schemas import (
    AccessTokenIn,
    AccessTokenOut,
    AdminUserPatch,
    LoginIn,
    NewAccessTokenOut,
    ProfilePatch,
    RefreshIn,
    RegisterIn,
    TokenOut,
    UserOut,
)
from energy_tracker.services.users.session import (
    clear_session,
    session_refresh_token,
    set_session,
)
from energy_tracker.services.users.store import MAX_ACCESS_TOKENS, TooManyTokens, UserStore

REFRESH_TTL = timedelta(days=30)

router = APIRouter(tags=["users"])

UserId = Annotated[str, Path(max_length=64)]
TokenId = Annotated[str, Path(max_length=64)]


async def users(request: Request) -> UserStore:
    """FastAPI dependency: the users store."""
    return request.app.state.users


async def user_out(user: User, homes: HouseholdStore) -> UserOut:
    """A user as the API shows them: never the password hash; the settings (deprecated here)
    are their own household's."""
    return (await users_out([user], homes))[0]


async def users_out(found: list[User], homes: HouseholdStore) -> list[UserOut]:
    """`user_out` of many users, their households read in one query."""
    own = await homes.own_of([u.id for u in found])
    return [
        UserOut(
            id=user.id,
            email=user.email,
            name=user.name,
            role=user.role,
            disabled=user.disabled,
            timezone=own[user.id].timezone if user.id in own else "UTC",
            currency=own[user.id].currency if user.id in own else "EUR",
            tariff=own[user.id].tariff if user.id in own else None,
            created_at=user.created_at.isoformat(),
        )
        for user in found
    ]


def _refresh_path(request: Request) -> str:
    return request.app.url_path_for("refresh")


async def _tokens(
    request: Request, store: UserStore, user: User, cookie: Response | None = None
) -> TokenOut:
    """New tokens for `user`; with `cookie`, the refresh token goes into its cookies instead
    of the body."""
    settings = request.app.state.settings
    refresh = new_refresh_token()
    await store.add_refresh_token(user.id, secret_digest(refresh), datetime.now(UTC) + REFRESH_TTL)
    access = issue_access_token(
        user.id,
        user.role,
        secret=request.app.state.secret,
        issuer=settings.jwt_issuer,
        ttl_s=settings.access_token_ttl_s,
    )
    if cookie is not None:
        set_session(request, cookie, refresh, REFRESH_TTL, _refresh_path(request))
    return TokenOut(
        access_token=access,
        expires_in=settings.access_token_ttl_s,
        refresh_token=None if cookie is not None else refresh,
    )


@router.post("/auth/register", status_code=201, response_model=UserOut, responses=answers(409))
async def register(
    body: RegisterIn,
    store: UserStore = Depends(users),
    homes: HouseholdStore = Depends(households),
) -> UserOut:
    """Create an account, with a household of its own; it joins every household its e-mail
    was invited to in the last 7 days. 409 when the email is taken."""
    try:
        user = await store.create(str(body.email), await hash_password(body.password), body.name)
    except Conflict:
        raise ApiError(409, "conflict", "an account with this email exists") from None
    return await user_out(user, homes)


@router.post(
    "/auth/login",
    response_model=TokenOut,
    response_model_exclude_none=True,
    responses=answers(401),
)
async def login(
    body: LoginIn, request: Request, response: Response, store: UserStore = Depends(users)
) -> TokenOut:
    """Tokens for a valid email and password; `refresh_in_cookie` (a browser) puts the refresh
    token in an HttpOnly cookie scoped to /auth/refresh instead of the body."""
    user = await store.by_email(body.email)
    valid = await verify_password(
        user.password_hash if user else DUMMY_PASSWORD_HASH, body.password
    )
    if user is None or not valid or user.disabled:
        raise unauthorized("wrong email or password")
    return await _tokens(request, store, user, response if body.refresh_in_cookie else None)


@router.post(
    "/auth/refresh",
    response_model=TokenOut,
    response_model_exclude_none=True,
    responses={401: {"description": "unknown, used or expired refresh token, or no CSRF proof"}},
)
async def refresh(
    request: Request,
    response: Response,
    body: RefreshIn | None = None,
    store: UserStore = Depends(users),
) -> TokenOut:
    """Rotate a refresh token given in the body, or (a browser, no body) the one in the session
    cookie, which also needs the X-CSRF-Token header; the answer goes the way it came."""
    token = body.refresh_token if body is not None else session_refresh_token(request)
    if token is None:
        raise unauthorized("no refresh token, or its CSRF token is missing or wrong")
    user_id = await store.use_refresh_token(secret_digest(token), datetime.now(UTC))
    user = await store.get(user_id) if user_id else None
    if user is None or user.disabled:
        raise unauthorized("invalid refresh token")
    return await _tokens(request, store, user, response if body is None else None)


@router.delete("/auth/refresh", status_code=204, responses=answers(401))
async def end_session(
    request: Request, response: Response, store: UserStore = Depends(users)
) -> None:
    """A browser signs out: its session cookie's refresh token is revoked and the cookies
    cleared (the CSRF header is required, so another site cannot sign a user out)."""
    token = session_refresh_token(request)
    if token is None:
        raise unauthorized("no session cookie, or its CSRF token is missing or wrong")
    await store.revoke_refresh_token(secret_digest(token))
    clear_session(response, _refresh_path(request))


@router.post("/auth/logout", status_code=204)
async def logout(
    body: RefreshIn, _: Caller = Depends(authorized), store: UserStore = Depends(users)
) -> None:
    """Revoke a refresh token."""
    await store.revoke_refresh_token(secret_digest(body.refresh_token))


@router.get("/users/me", response_model=UserOut)
async def me(
    caller: Caller = Depends(authorized),
    store: UserStore = Depends(users),
    homes: HouseholdStore = Depends(households),
) -> UserOut:
    """Your account."""
    user = await store.get(caller.user_id)
    if user is None:
        raise not_found("user")
    return await user_out(user, homes)


@router.patch(
    "/users/me",
    response_model=UserOut,
    description="Change your name. Deprecated for one release: the time zone, currency and "
    "tariff, which are your own household's now (PATCH /households/{id}).",
)
async def update_me(
    body: ProfilePatch,
    caller: Caller = Depends(authorized),
    store: UserStore = Depends(users),
    homes: HouseholdStore = Depends(households),
) -> UserOut:
    """Change your name, and (deprecated) your own household's time zone, currency or tariff."""
    settings = body.settings()
    if settings:
        own = caller.home(None)
        caller.check(own, "household", action=Action.MANAGE)
        await homes.update(own, **settings)
    name = {"name": body.name} if "name" in body.model_fields_set else {}
    user = await store.update(caller.user_id, **name)
    if user is None:
        raise not_found("user")
    return await user_out(user, homes)


def token_out(token: AccessToken) -> AccessTokenOut:
    """A personal access token as its owner sees it listed: never the token."""
    return AccessTokenOut(
        id=token.id,
        name=token.name,
        scope="read" if token.scope == "read" else "write",
        created_at=token.created_at.isoformat(),
        expires_at=token.expires_at.isoformat() if token.expires_at else None,
        last_used_at=token.last_used_at.isoformat() if token.last_used_at else None,
    )


@router.post(
    "/users/me/tokens",
    status_code=201,
    response_model=NewAccessTokenOut,
    responses={409: {"description": f"already {MAX_ACCESS_TOKENS} live tokens: revoke one"}},
)
async def create_token(
    body: AccessTokenIn,
    request: Request,
    caller: Caller = Depends(authorized),
    store: UserStore = Depends(users),
) -> NewAccessTokenOut:
    """A personal access token for a script or Home Assistant (`Authorization: Bearer etp_…`),
    shown in this answer only; `read` ones cannot change anything. Only a password sign-in may
    make one, not another token."""
    now = datetime.now(UTC)
    token_id = uuid.uuid4()
    secret = new_personal_token(token_id, secret=request.app.state.secret)
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    made = AccessToken(
        str(token_id), caller.user_id, body.name, body.scope, now, expires, None, None
    )
    try:
        await store.add_access_token(made, secret_digest(secret), now)
    except TooManyTokens:
        raise ApiError(
            409, "conflict", f"you already hold {MAX_ACCESS_TOKENS} tokens: revoke one first"
        ) from None
    except Conflict:
        raise not_found("user") from None
    return NewAccessTokenOut(**token_out(made).model_dump(), token=secret)


@router.get("/users/me/tokens", response_model=list[AccessTokenOut])
async def list_tokens(
    caller: Caller = Depends(authorized), store: UserStore = Depends(users)
) -> list[AccessTokenOut]:
    """Your personal access tokens not revoked (expired ones included), newest first, each with
    its last use (to the minute); never the tokens themselves."""
    return [token_out(t) for t in await store.access_tokens(caller.user_id)]


@router.delete("/users/me/tokens/{token_id}", status_code=204)
async def revoke_token(
    token_id: TokenId,
    caller: Caller = Depends(authorized),
    store: UserStore = Depends(users),
    cache: CredentialCache = Depends(credentials),
) -> None:
    """Revoke one of your tokens: refused from the next request on in this service, within
    CHECK_EVERY_S (1 s) in services running in other processes."""
    if not await store.revoke_access_token(caller.user_id, token_id, datetime.now(UTC)):
        raise not_found("token")
    await cache.forget_token(token_id)


@router.get("/users", response_model=list[UserOut])
async def list_users(
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    _: Caller = Depends(authorized),
    store: UserStore = Depends(users),
    homes: HouseholdStore = Depends(households),
) -> list[UserOut]:
    """Every account, oldest first (admins only)."""
    return await users_out(await store.list(limit=limit, offset=offset), homes)


@router.patch("/users/{user_id}", response_model=UserOut)
async def admin_update(
    user_id: UserId,
    body: AdminUserPatch,
    _: Caller = Depends(authorized),
    store: UserStore = Depends(users),
    homes: HouseholdStore = Depends(households),
    cache: CredentialCache = Depends(credentials),
) -> UserOut:
    """Change a user's role or disable them (admins only); disabling signs them out."""
    user = await store.update(user_id, **body.model_dump(exclude_none=True))
    if user is None:
        raise not_found("user")
    await cache.forget_user(user_id)
    if body.disabled:
        await store.revoke_user_tokens(user_id)
    return await user_out(user, homes)


# The household routes are the users service's too; their route objects join its router as they
# are (include_router would nest them, and the OpenAPI error listing walks flat route lists).
router.routes.extend(household_api.router.routes)

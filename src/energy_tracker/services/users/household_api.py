"""Routes of households: their settings, members, roles and invitations (users service)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from energy_tracker.core.authz import Action, Caller, role_in
from energy_tracker.core.credentials import CredentialCache, credentials
from energy_tracker.core.errors import ApiError
from energy_tracker.core.http import answers, authorized, not_found
from energy_tracker.core.stores.metadata import Conflict
from energy_tracker.services.users.household_store import HouseholdStore, LastOwner
from energy_tracker.services.users.models import Household, Invitation, Member
from energy_tracker.services.users.schemas import (
    HouseholdDetail,
    HouseholdList,
    HouseholdOut,
    HouseholdPatch,
    MemberAdded,
    MemberIn,
    MemberOut,
    MemberPatch,
)
from energy_tracker.services.users.store import UserStore

router = APIRouter(tags=["households"])

HouseholdId = Annotated[str, Path(max_length=64)]
UserId = Annotated[str, Path(max_length=64)]
InvitationId = Annotated[str, Path(max_length=64)]


async def households(request: Request) -> HouseholdStore:
    """FastAPI dependency: the households store."""
    return request.app.state.households


async def _users(request: Request) -> UserStore:
    return request.app.state.users


def _now() -> datetime:
    return datetime.now(UTC)


def household_out(household: Household, role: str | None) -> dict[str, Any]:
    return {
        "id": household.id,
        "name": household.name,
        "role": role,
        "timezone": household.timezone,
        "currency": household.currency,
        "tariff": household.tariff,
        "country": household.country,
        "created_at": household.created_at.isoformat(),
    }


def member_out(member: Member) -> dict[str, Any]:
    return {
        "user_id": member.user_id,
        "email": member.email,
        "name": member.name,
        "role": member.role,
        "notify_email": member.notify_email,
        "joined_at": member.joined_at.isoformat(),
    }


def invitation_out(invitation: Invitation) -> dict[str, Any]:
    return {
        "id": invitation.id,
        "household_id": invitation.household_id,
        "email": invitation.email,
        "role": invitation.role,
        "expires_at": invitation.expires_at.isoformat(),
    }


def _last_owner() -> ApiError:
    return ApiError(
        409,
        "conflict",
        "a household keeps one owner: make another member owner first",
        [{"field": "role", "message": "the household's only owner"}],
    )


async def _detail(store: HouseholdStore, caller: Caller, household_id: str) -> dict[str, Any]:
    household = await store.get(household_id)
    if household is None:
        raise not_found("household")
    return {
        **household_out(household, role_in(caller.identity, household_id)),
        "members": [member_out(m) for m in await store.members(household_id)],
        "invitations": [invitation_out(i) for i in await store.invitations(household_id, _now())],
    }


@router.get("/households", response_model=HouseholdList)
async def list_households(
    caller: Caller = Depends(authorized), store: HouseholdStore = Depends(households)
) -> dict[str, Any]:
    """The households you belong to, with your role in each, your own first."""
    return {"items": [household_out(h, role) for h, role in await store.of_user(caller.user_id)]}


@router.get("/households/{household_id}", response_model=HouseholdDetail)
async def get_household(
    household_id: HouseholdId,
    caller: Caller = Depends(authorized),
    store: HouseholdStore = Depends(households),
) -> dict[str, Any]:
    """A household of yours: its settings, members and pending invitations."""
    return await _detail(store, caller, caller.check(household_id, "household"))


@router.patch("/households/{household_id}", response_model=HouseholdDetail)
async def update_household(
    household_id: HouseholdId,
    body: HouseholdPatch,
    caller: Caller = Depends(authorized),
    store: HouseholdStore = Depends(households),
) -> dict[str, Any]:
    """Rename it, or change its time zone, currency, tariff or country (owners)."""
    caller.check(household_id, "household")
    await store.update(household_id, **body.settings())
    return await _detail(store, caller, household_id)


@router.post(
    "/households/{household_id}/members",
    status_code=201,
    response_model=MemberAdded,
    response_model_exclude_none=True,
    responses=answers(409),
)
async def add_member(
    household_id: HouseholdId,
    body: MemberIn,
    caller: Caller = Depends(authorized),
    store: HouseholdStore = Depends(households),
    accounts: UserStore = Depends(_users),
    cache: CredentialCache = Depends(credentials),
) -> dict[str, Any]:
    """Invite by e-mail (owners): an existing account joins at once; otherwise registering
    with that e-mail within 7 days joins. 409 when the account is a member already."""
    caller.check(household_id, "household")
    field = [{"field": "email", "message": "that is you"}]
    user = await accounts.by_email(str(body.email))
    if user is not None and user.id == caller.user_id:
        raise ApiError(422, "invalid", "you cannot invite yourself", field)
    if user is None:
        invitation = await store.invite(
            household_id, str(body.email), body.role, caller.user_id, _now()
        )
        return {"status": "invited", "invitation": invitation_out(invitation)}
    try:
        await store.add_member(household_id, user.id, body.role, _now())
    except Conflict:
        raise ApiError(
            409,
            "conflict",
            "already a member of this household",
            [{"field": "email", "message": "already a member"}],
        ) from None
    await cache.forget_user(user.id)
    member = await store.member(household_id, user.id)
    return {"status": "joined", "member": member_out(member) if member else None}


@router.patch(
    "/households/{household_id}/members/{user_id}",
    response_model=MemberOut,
    responses=answers(409),
)
async def change_member(
    household_id: HouseholdId,
    user_id: UserId,
    body: MemberPatch,
    caller: Caller = Depends(authorized),
    store: HouseholdStore = Depends(households),
    cache: CredentialCache = Depends(credentials),
) -> dict[str, Any]:
    """Change a member's role (owners; `owner` transfers the household, its other owners
    becoming members), or their alert e-mails (owners, or the member themself). 409 when
    the household would have no owner left."""
    own_notifications = user_id == caller.user_id and body.role is None
    caller.check(household_id, "household", action=Action.READ if own_notifications else None)
    before = await store.members(household_id)
    try:
        member = await store.change_member(household_id, user_id, body.role, body.notify_email)
    except LastOwner:
        raise _last_owner() from None
    if member is None:
        raise not_found("member")
    for m in before:  # a transfer demotes the other owners
        await cache.forget_user(m.user_id)
    return member_out(member)


@router.delete(
    "/households/{household_id}/members/{user_id}", status_code=204, responses=answers(409)
)
async def remove_member(
    household_id: HouseholdId,
    user_id: UserId,
    caller: Caller = Depends(authorized),
    store: HouseholdStore = Depends(households),
    cache: CredentialCache = Depends(credentials),
) -> None:
    """Remove a member (owners), or leave (yourself, any role). 409 for the only owner."""
    leaving = user_id == caller.user_id
    caller.check(household_id, "household", action=Action.READ if leaving else None)
    try:
        removed = await store.remove_member(household_id, user_id)
    except LastOwner:
        raise _last_owner() from None
    if not removed:
        raise not_found("member")
    await cache.forget_user(user_id)


@router.post(
    "/households/invitations/{invitation_id}/accept",
    response_model=HouseholdOut,
    responses={**answers(409), 410: {"description": "the invitation has expired"}},
)
async def accept_invitation(
    invitation_id: InvitationId,
    caller: Caller = Depends(authorized),
    store: HouseholdStore = Depends(households),
    accounts: UserStore = Depends(_users),
    cache: CredentialCache = Depends(credentials),
) -> dict[str, Any]:
    """Accept an invitation of your e-mail (registering accepts live ones by itself): 410 once
    it has expired (7 days; ask for a new one), 409 when already accepted or a member."""
    invitation = await store.invitation(invitation_id)
    user = await accounts.get(caller.user_id)
    if invitation is None or user is None or invitation.email != user.email:
        raise not_found("invitation")
    if invitation.accepted_at is not None:
        raise ApiError(409, "conflict", "this invitation was accepted already")
    if invitation.expires_at <= _now():
        raise ApiError(
            410,
            "gone",
            "this invitation has expired: ask the household's owner for a new one",
            {"expired_at": invitation.expires_at.isoformat()},
        )
    try:
        await store.accept(invitation, caller.user_id, _now())
    except Conflict:
        raise ApiError(409, "conflict", "already a member of this household") from None
    await cache.forget_user(caller.user_id)
    household = await store.get(invitation.household_id)
    if household is None:
        raise not_found("invitation")
    return household_out(household, invitation.role)

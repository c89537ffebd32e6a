"""Contract suite of the metadata database (users, devices, refresh and access tokens).

Every test runs against each backend ET_DB_URL can name: SQLite (embedded), MariaDB and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, delete, inspect, select, text
from sqlalchemy.exc import StatementError

from energy_tracker.core.auth import AccessGrant
from energy_tracker.core.directory import DeviceContext, HouseholdProfile
from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl
from energy_tracker.core.stores.metadata import Conflict, Database, alembic_config
from energy_tracker.core.stores.schema import metadata, refresh_tokens, users
from energy_tracker.services.devices.models import Device
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.users.household_store import HouseholdStore
from energy_tracker.services.users.models import AccessToken
from energy_tracker.services.users.pruning import RefreshTokenPruner
from energy_tracker.services.users.store import MAX_ACCESS_TOKENS, TooManyTokens, UserStore

HASH_A = "a" * 64
HASH_B = "b" * 64
HASH_C = "c" * 64
LATER = datetime(2030, 1, 1, tzinfo=UTC)
NOW = datetime(2029, 6, 1, 12, 0, tzinfo=UTC)
HEAD = "0006_credential_changes"  # the newest revision under migrations/versions


@pytest.fixture
def user_store(metadata_db: Database) -> UserStore:
    return UserStore(metadata_db)


@pytest.fixture
def device_store(metadata_db: Database) -> DeviceStore:
    return DeviceStore(metadata_db)


@pytest.fixture
def household_store(metadata_db: Database) -> HouseholdStore:
    return HouseholdStore(metadata_db)


async def schema_revision(db: Database) -> list[str]:
    async with db.begin() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())


# --- lifecycle and migrations ---------------------------------------------------------------


async def test_migrate_twice_is_harmless(metadata_db: Database, user_store: UserStore) -> None:
    await user_store.create("kept@example.com", "h")
    await metadata_db.migrate()
    assert await schema_revision(metadata_db) == [HEAD]
    kept = await user_store.by_email("kept@example.com")
    assert kept is not None and kept.email == "kept@example.com"


def _schema_drift(connection: Connection) -> list[object]:
    drift: list[object] = compare_metadata(MigrationContext.configure(connection), metadata)
    return drift


async def test_migrations_create_exactly_the_schema_module(metadata_db: Database) -> None:
    async with metadata_db.begin() as conn:
        assert await conn.run_sync(_schema_drift) == []


def _downgrade_to_base(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


def _table_names(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


async def test_downgrade_to_base_then_upgrade_again(metadata_db: Database) -> None:
    async with metadata_db.begin() as conn:
        await conn.run_sync(_downgrade_to_base)
    async with metadata_db.begin() as conn:
        assert await conn.run_sync(_table_names) == ["alembic_version"]
    await metadata_db.migrate()
    async with metadata_db.begin() as conn:
        assert await conn.run_sync(_table_names) == [
            "access_tokens",
            "alembic_version",
            "alert_deliveries",
            "alert_delivery_attempts",
            "alert_device_seen",
            "alert_rules",
            "alert_states",
            "alert_transitions",
            "alert_usage",
            "alerts",
            "credential_changes",
            "devices",
            "household_invitations",
            "household_members",
            "households",
            "refresh_tokens",
            "users",
        ]
    assert await schema_revision(metadata_db) == [HEAD]


async def test_concurrent_migrations_of_a_fresh_database_both_succeed(metadata_db_url: str) -> None:
    first, second = Database(metadata_db_url), Database(metadata_db_url)
    await first.start()
    await second.start()
    try:
        await asyncio.gather(first.migrate(), second.migrate(), first.migrate())
        assert await schema_revision(first) == [HEAD]
    finally:
        await first.stop()
        await second.stop()


MIGRATE_SCRIPT = """
import asyncio, sys
from energy_tracker.core.stores.metadata import Database

async def main() -> None:
    db = Database(sys.argv[1])
    await db.start()
    try:
        await db.migrate()
    finally:
        await db.stop()

asyncio.run(main())
"""


async def test_processes_migrating_a_fresh_database_at_once_all_succeed(
    metadata_db_url: str,
) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", MIGRATE_SCRIPT, metadata_db_url, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    outcomes = [await process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outcomes
    database = Database(metadata_db_url)
    await database.start()
    try:
        assert await schema_revision(database) == [HEAD]
    finally:
        await database.stop()


async def test_alias_spellings_of_the_url_reach_the_same_database(metadata_db: Database) -> None:
    scheme, rest = metadata_db.url.split("://", 1)
    aliases = {
        "sqlite": ["sqlite+aiosqlite"],
        "mysql": ["mysql+aiomysql", "mariadb"],
        "postgresql": ["postgres", "postgresql+asyncpg"],
    }[scheme]
    await UserStore(metadata_db).create("alias@example.com", "h")
    for alias in aliases:
        other = Database(f"{alias}://{rest}")
        await other.start()
        try:
            found = await UserStore(other).by_email("alias@example.com")
            assert found is not None and found.email == "alias@example.com"
        finally:
            await other.stop()


async def test_stop_twice_is_harmless(metadata_db: Database) -> None:
    await metadata_db.stop()
    await metadata_db.stop()
    with pytest.raises(RuntimeError, match="start"):
        _ = metadata_db.engine


@pytest.mark.parametrize(
    "url",
    [
        "oracle://scott@db/orcl",
        "postgresql+psycopg2://postgres@127.0.0.1/x",
        "sqlite://",
        "sqlite:///:memory:",
        "not a url",
    ],
)
def test_unsupported_urls_are_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(UnsupportedUrl, match="ET_DB_URL"):
        Database(url)


@pytest.fixture
def file_in_the_way(tmp_path: Path) -> Path:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    return blocker


@pytest.mark.parametrize(
    "url",
    ["mysql://root@127.0.0.1:1/x", "postgresql://postgres@127.0.0.1:1/x"],
    ids=["mariadb", "postgresql"],
)
async def test_unreachable_server_is_backend_unavailable_within_seconds(url: str) -> None:
    # A guard against hanging, not a speed check: the refusal comes at once.
    with pytest.raises(BackendUnavailable, match=r"^ET_DB_URL=.*127\.0\.0\.1:1/x is unreachable"):
        async with asyncio.timeout(60):
            await Database(url).start()


async def test_sqlite_path_that_cannot_be_created_is_backend_unavailable(
    file_in_the_way: Path,
) -> None:
    with pytest.raises(BackendUnavailable, match="ET_DB_URL=sqlite:///"):
        await Database(f"sqlite:///{file_in_the_way}/meta.db").start()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose TCP handshake succeeds but which never says a word (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("scheme", ["mysql://root", "postgresql://postgres"])
async def test_silent_server_times_out_instead_of_hanging(silent_server: int, scheme: str) -> None:
    # The connect timeout (1 s) ends it; the guard only stops a hang from eating the suite (a
    # TimeoutError from it is not the BackendUnavailable expected).
    database = Database(f"{scheme}@127.0.0.1:{silent_server}/x", connect_timeout=1.0)
    with pytest.raises(BackendUnavailable, match="ET_DB_URL"):
        async with asyncio.timeout(60):
            await database.start()


# --- users ----------------------------------------------------------------------------------


async def test_create_user_lowercases_email_and_applies_defaults(user_store: UserStore) -> None:
    user = await user_store.create("Alice@Example.COM", "argon2-hash", name="Alice")
    assert user.email == "alice@example.com"
    assert (user.name, user.role, user.disabled) == ("Alice", "user", False)
    assert user.created_at.tzinfo == UTC
    assert len(user.id) == 36
    assert await user_store.get(user.id) == user
    # Every account has a household of its own from the start, with the default settings.
    [(home, role)] = await HouseholdStore(user_store._db).of_user(user.id)
    assert role == "owner"
    assert (home.name, home.timezone, home.currency, home.tariff) == (
        "Alice's home",
        "UTC",
        "EUR",
        None,
    )


async def test_get_and_by_email_of_unknown_user_are_none(user_store: UserStore) -> None:
    assert await user_store.get("00000000-0000-0000-0000-000000000000") is None
    assert await user_store.by_email("nobody@example.com") is None


async def test_by_email_ignores_case(user_store: UserStore) -> None:
    user = await user_store.create("bob@example.com", "h", role="admin")
    found = await user_store.by_email("BOB@Example.com")
    assert found == user
    assert found.role == "admin"


async def test_duplicate_email_in_other_case_is_conflict(user_store: UserStore) -> None:
    await user_store.create("carol@example.com", "h1")
    with pytest.raises(Conflict):
        await user_store.create("Carol@EXAMPLE.com", "h2")
    only = await user_store.list()
    assert [u.password_hash for u in only] == ["h1"]


async def test_update_household_settings(
    user_store: UserStore, household_store: HouseholdStore
) -> None:
    user = await user_store.create("dave@example.com", "h")
    [(home, _)] = await household_store.of_user(user.id)
    tariff = {
        "type": "tou",
        "bands": [
            {"from_hour": 0, "to_hour": 7, "price_per_kwh": 0.18},
            {"from_hour": 7, "to_hour": 24, "price_per_kwh": 0.32},
        ],
        "standing_charge_per_day": 0.45,
    }
    updated = await household_store.update(
        home.id, timezone="Europe/Berlin", currency="GBP", tariff=tariff, name="Dave's flat"
    )
    assert updated is not None
    assert (updated.timezone, updated.currency, updated.name) == (
        "Europe/Berlin",
        "GBP",
        "Dave's flat",
    )
    assert updated.tariff == {
        "type": "tou",
        "bands": [
            {"from_hour": 0, "to_hour": 7, "price_per_kwh": 0.18},
            {"from_hour": 7, "to_hour": 24, "price_per_kwh": 0.32},
        ],
        "standing_charge_per_day": 0.45,
    }
    assert await household_store.get(home.id) == updated
    cleared = await household_store.update(home.id, tariff=None, country="DE")
    assert cleared is not None and (cleared.tariff, cleared.country) == (None, "DE")
    assert await household_store.update("00000000-0000-0000-0000-000000000000") is None

    again = await user_store.update(
        user.id, name="Dave", role="admin", disabled=True, password_hash="new"
    )
    assert again is not None
    assert (again.name, again.role, again.disabled, again.password_hash) == (
        "Dave",
        "admin",
        True,
        "new",
    )
    assert await user_store.update(user.id) == again


async def test_update_of_unknown_user_is_none(user_store: UserStore) -> None:
    assert await user_store.update("00000000-0000-0000-0000-000000000000", name="x") is None


async def test_update_refuses_fields_outside_the_profile(user_store: UserStore) -> None:
    user = await user_store.create("erin@example.com", "h")
    with pytest.raises(ValueError, match="email"):
        await user_store.update(user.id, email="other@example.com")


async def test_list_users_pages_oldest_first(user_store: UserStore) -> None:
    for n in range(5):
        await user_store.create(f"user{n}@example.com", "h")
    assert [u.email for u in await user_store.list()] == [
        "user0@example.com",
        "user1@example.com",
        "user2@example.com",
        "user3@example.com",
        "user4@example.com",
    ]
    assert [u.email for u in await user_store.list(limit=2, offset=2)] == [
        "user2@example.com",
        "user3@example.com",
    ]
    assert await user_store.list(limit=10, offset=5) == []


# --- refresh tokens -------------------------------------------------------------------------


async def test_refresh_token_works_once(user_store: UserStore) -> None:
    user = await user_store.create("frank@example.com", "h")
    await user_store.add_refresh_token(user.id, HASH_A, LATER)
    assert await user_store.use_refresh_token(HASH_A, NOW) == user.id
    assert await user_store.use_refresh_token(HASH_A, NOW) is None


async def test_expired_refresh_token_is_none(user_store: UserStore) -> None:
    user = await user_store.create("grace@example.com", "h")
    await user_store.add_refresh_token(user.id, HASH_A, datetime(2029, 6, 1, 12, 0, tzinfo=UTC))
    assert (
        await user_store.use_refresh_token(HASH_A, datetime(2029, 6, 1, 12, 0, tzinfo=UTC)) is None
    )
    assert await user_store.use_refresh_token(HASH_A, datetime(2029, 7, 1, tzinfo=UTC)) is None


async def test_refresh_token_expiry_compares_instants_not_wall_clocks(
    user_store: UserStore,
) -> None:
    user = await user_store.create("heidi@example.com", "h")
    await user_store.add_refresh_token(user.id, HASH_A, datetime(2029, 6, 1, 12, 0, tzinfo=UTC))
    await user_store.add_refresh_token(user.id, HASH_B, datetime(2029, 6, 1, 12, 0, tzinfo=UTC))
    # 13:30 at +02:00 is 11:30 UTC: before expiry, though the wall clock reads later.
    berlin_summer = timezone(timedelta(hours=2))
    assert (
        await user_store.use_refresh_token(
            HASH_A, datetime(2029, 6, 1, 13, 30, tzinfo=berlin_summer)
        )
        == user.id
    )
    # 11:30 at -01:00 is 12:30 UTC: expired, though the wall clock reads earlier.
    azores = timezone(timedelta(hours=-1))
    assert (
        await user_store.use_refresh_token(HASH_B, datetime(2029, 6, 1, 11, 30, tzinfo=azores))
        is None
    )


async def test_unknown_refresh_token_is_none(user_store: UserStore) -> None:
    assert await user_store.use_refresh_token(HASH_C, NOW) is None


async def test_revoked_refresh_token_is_none(user_store: UserStore) -> None:
    user = await user_store.create("ivan@example.com", "h")
    await user_store.add_refresh_token(user.id, HASH_A, LATER)
    await user_store.revoke_refresh_token(HASH_A)
    assert await user_store.use_refresh_token(HASH_A, NOW) is None
    await user_store.revoke_refresh_token(HASH_C)  # unknown: ignored


async def test_revoke_user_tokens_revokes_only_that_users(user_store: UserStore) -> None:
    judy = await user_store.create("judy@example.com", "h")
    kim = await user_store.create("kim@example.com", "h")
    await user_store.add_refresh_token(judy.id, HASH_A, LATER)
    await user_store.add_refresh_token(judy.id, HASH_B, LATER)
    await user_store.add_refresh_token(kim.id, HASH_C, LATER)
    await user_store.revoke_user_tokens(judy.id)
    assert await user_store.use_refresh_token(HASH_A, NOW) is None
    assert await user_store.use_refresh_token(HASH_B, NOW) is None
    assert await user_store.use_refresh_token(HASH_C, NOW) == kim.id


async def test_concurrent_uses_of_one_refresh_token_succeed_once(user_store: UserStore) -> None:
    user = await user_store.create("leo@example.com", "h")
    await user_store.add_refresh_token(user.id, HASH_A, LATER)
    results = await asyncio.gather(*(user_store.use_refresh_token(HASH_A, NOW) for _ in range(5)))
    assert sorted(results, key=lambda r: r is not None) == [None, None, None, None, user.id]


async def test_duplicate_refresh_token_or_unknown_user_is_conflict(user_store: UserStore) -> None:
    user = await user_store.create("mia@example.com", "h")
    await user_store.add_refresh_token(user.id, HASH_A, LATER)
    with pytest.raises(Conflict):
        await user_store.add_refresh_token(user.id, HASH_A, LATER)
    with pytest.raises(Conflict):
        await user_store.add_refresh_token("00000000-0000-0000-0000-000000000000", HASH_B, LATER)


async def token_hashes(db: Database) -> set[str]:
    async with db.begin() as conn:
        return set((await conn.scalars(select(refresh_tokens.c.token_hash))).all())


async def test_pruning_deletes_refresh_tokens_only_long_after_they_expired(
    metadata_db: Database, user_store: UserStore
) -> None:
    user = await user_store.create("olga@example.com", "h")
    now = datetime.now(UTC)
    tokens = {  # hash: (expires at, revoked)
        "1" * 64: (now - timedelta(days=40), False),  # expired 40 days ago: goes
        "2" * 64: (now - timedelta(days=31), True),  # spent, expired 31 days ago: goes
        "3" * 64: (now - timedelta(days=10), True),  # spent, expired 10 days ago: kept
        "4" * 64: (now + timedelta(days=20), True),  # spent, still unexpired: kept
        "5" * 64: (now + timedelta(days=20), False),  # valid: kept, and still works
    }
    for digest, (expires_at, revoked) in tokens.items():
        await user_store.add_refresh_token(user.id, digest, expires_at)
        if revoked:
            await user_store.revoke_refresh_token(digest)

    assert await RefreshTokenPruner(user_store, keep_days=30).prune() == 2
    assert await token_hashes(metadata_db) == {"3" * 64, "4" * 64, "5" * 64}
    # A spent token kept within the 30 days still gives the theft away: using it again
    # revokes the account's other sessions.
    assert await user_store.use_refresh_token("3" * 64, now) is None
    assert await user_store.use_refresh_token("5" * 64, now) is None

    # However late the pass says it is, a token not yet expired is never deleted.
    far = int((now + timedelta(days=400)).timestamp() * 1000)
    assert await RefreshTokenPruner(user_store, keep_days=0).prune(now_ms=far) == 1
    assert await token_hashes(metadata_db) == {"4" * 64, "5" * 64}


async def test_deleting_in_batches_deletes_every_match_and_nothing_else(
    metadata_db: Database, user_store: UserStore
) -> None:
    user = await user_store.create("pia@example.com", "h")
    expired = [f"{i}" * 64 for i in range(1, 8)]  # 7 rows: batches of 3, 3 and 1
    for digest in expired:
        await user_store.add_refresh_token(user.id, digest, NOW - timedelta(days=1))
    await user_store.add_refresh_token(user.id, HASH_A, LATER)
    gone = refresh_tokens.c.expires_at < NOW
    assert await metadata_db.delete_in_batches(refresh_tokens, gone, batch=3) == 7
    assert await token_hashes(metadata_db) == {HASH_A}
    assert await metadata_db.delete_in_batches(refresh_tokens, gone, batch=3) == 0


async def test_naive_datetimes_are_refused(user_store: UserStore) -> None:
    user = await user_store.create("nina@example.com", "h")
    with pytest.raises(StatementError, match="naive datetime"):
        await user_store.add_refresh_token(user.id, HASH_A, datetime(2030, 1, 1))


# --- personal access tokens -----------------------------------------------------------------


def access_token(user_id: str, token_id: str, expires_at: datetime | None = LATER) -> AccessToken:
    return AccessToken(token_id, user_id, "ha", "read", NOW, expires_at, None, None)


TOKEN_A = "00000000-0000-4000-8000-00000000000a"
TOKEN_B = "00000000-0000-4000-8000-00000000000b"


async def test_access_token_grant_list_and_revocation(user_store: UserStore) -> None:
    olga = await user_store.create("olga@example.com", "h")
    piet = await user_store.create("piet@example.com", "h")
    first = await user_store.add_access_token(access_token(olga.id, TOKEN_A), HASH_A, NOW)
    later = replace(access_token(olga.id, TOKEN_B, None), created_at=NOW + timedelta(seconds=1))
    await user_store.add_access_token(later, HASH_B, NOW)
    assert await user_store.access_grant(TOKEN_A) == AccessGrant(
        TOKEN_A, olga.id, HASH_A, "read", LATER, False
    )
    assert await user_store.access_grant("unknown") is None
    assert await user_store.access_tokens(olga.id) == [later, first]  # newest first
    assert await user_store.access_tokens(piet.id) == []

    assert not await user_store.revoke_access_token(piet.id, TOKEN_A, NOW)  # not piet's
    assert await user_store.revoke_access_token(olga.id, TOKEN_A, NOW)
    assert not await user_store.revoke_access_token(olga.id, TOKEN_A, NOW)  # already
    grant = await user_store.access_grant(TOKEN_A)
    assert grant is not None and grant.revoked
    assert await user_store.access_tokens(olga.id) == [later]


async def test_access_token_use_is_written_once_per_resolution(user_store: UserStore) -> None:
    user = await user_store.create("quin@example.com", "h")
    await user_store.add_access_token(access_token(user.id, TOKEN_A), HASH_A, NOW)
    minute = timedelta(minutes=1)
    used = NOW + timedelta(seconds=5)
    await user_store.access_token_used(TOKEN_A, used, minute)
    # 59 s later: another process already recorded a use within the minute: kept.
    await user_store.access_token_used(TOKEN_A, used + timedelta(seconds=59), minute)
    (listed,) = await user_store.access_tokens(user.id)
    assert listed.last_used_at == used
    await user_store.access_token_used(TOKEN_A, used + minute, minute)
    (listed,) = await user_store.access_tokens(user.id)
    assert listed.last_used_at == used + minute


async def test_live_access_tokens_are_capped_per_user(user_store: UserStore) -> None:
    user = await user_store.create("rhea@example.com", "h")
    expired = access_token(user.id, str(uuid.uuid4()), NOW - timedelta(days=1))
    await user_store.add_access_token(expired, "e" * 64, NOW)  # does not count
    for n in range(MAX_ACCESS_TOKENS):
        await user_store.add_access_token(
            access_token(user.id, str(uuid.uuid4())), f"{n:064d}", NOW
        )
    with pytest.raises(TooManyTokens):
        await user_store.add_access_token(access_token(user.id, TOKEN_A), HASH_A, NOW)
    assert await user_store.revoke_access_token(user.id, expired.id, NOW)
    with pytest.raises(TooManyTokens):  # revoking an expired one frees nothing
        await user_store.add_access_token(access_token(user.id, TOKEN_A), HASH_A, NOW)


async def test_duplicate_access_token_or_unknown_user_is_conflict(user_store: UserStore) -> None:
    user = await user_store.create("sven@example.com", "h")
    await user_store.add_access_token(access_token(user.id, TOKEN_A), HASH_A, NOW)
    with pytest.raises(Conflict):
        await user_store.add_access_token(access_token(user.id, TOKEN_B), HASH_A, NOW)
    with pytest.raises(Conflict):
        await user_store.add_access_token(
            access_token("00000000-0000-0000-0000-000000000000", TOKEN_B), HASH_B, NOW
        )


# --- devices --------------------------------------------------------------------------------


async def test_create_and_get_device(user_store: UserStore, device_store: DeviceStore) -> None:
    owner = await user_store.create("olga@example.com", "h")
    device = await device_store.create(
        owner.id,
        "Main meter",
        "meter",
        HASH_A,
        timezone="Europe/Paris",
        location="Cellar",
        meta={"vendor": "Acme", "phases": 3},
    )
    assert (device.owner_id, device.name, device.type) == (owner.id, "Main meter", "meter")
    assert (device.timezone, device.location) == ("Europe/Paris", "Cellar")
    assert device.meta == {"vendor": "Acme", "phases": 3}
    assert device.disabled is False
    assert device.created_at.tzinfo == UTC
    assert await device_store.get(device.id) == device
    assert await device_store.get("00000000-0000-0000-0000-000000000000") is None


async def test_device_defaults_are_null(user_store: UserStore, device_store: DeviceStore) -> None:
    owner = await user_store.create("paul@example.com", "h")
    device = await device_store.create(owner.id, "Plug", "plug", HASH_A)
    stored = await device_store.get(device.id)
    assert stored is not None
    assert (stored.timezone, stored.location, stored.meta, stored.disabled) == (
        None,
        None,
        None,
        False,
    )


async def test_device_of_unknown_owner_is_conflict(device_store: DeviceStore) -> None:
    with pytest.raises(Conflict):
        await device_store.create("00000000-0000-0000-0000-000000000000", "x", "plug", HASH_A)


async def test_duplicate_key_hash_is_conflict(
    user_store: UserStore, device_store: DeviceStore
) -> None:
    owner = await user_store.create("quinn@example.com", "h")
    first = await device_store.create(owner.id, "One", "plug", HASH_A)
    second = await device_store.create(owner.id, "Two", "plug", HASH_B)
    with pytest.raises(Conflict):
        await device_store.create(owner.id, "Three", "plug", HASH_A)
    with pytest.raises(Conflict):
        await device_store.set_key_hash(second.id, HASH_A)
    found = await device_store.by_key_hash(HASH_A)
    assert found is not None and found.id == first.id


async def test_list_devices_of_one_owner_or_all(
    user_store: UserStore, device_store: DeviceStore
) -> None:
    rita = await user_store.create("rita@example.com", "h")
    sam = await user_store.create("sam@example.com", "h")
    await device_store.create(rita.id, "r1", "meter", "1" * 64)
    await device_store.create(sam.id, "s1", "solar", "2" * 64)
    await device_store.create(rita.id, "r2", "battery", "3" * 64)
    homes = HouseholdStore(device_store._db)
    (rita_home, _), (sam_home, _) = [(await homes.memberships(u.id))[0] for u in (rita, sam)]
    assert [d.name for d in await device_store.list([rita_home])] == ["r1", "r2"]
    assert [d.name for d in await device_store.list([sam_home])] == ["s1"]
    assert [d.name for d in await device_store.list([rita_home, sam_home])] == ["r1", "s1", "r2"]
    assert [d.name for d in await device_store.list(None)] == ["r1", "s1", "r2"]
    assert [d.name for d in await device_store.list(None, limit=1, offset=1)] == ["s1"]
    assert await device_store.list(["00000000-0000-0000-0000-000000000000"]) == []


async def test_update_device(user_store: UserStore, device_store: DeviceStore) -> None:
    owner = await user_store.create("tina@example.com", "h")
    device = await device_store.create(owner.id, "Old", "plug", HASH_A, meta={"a": 1})
    updated = await device_store.update(
        device.id,
        name="New",
        type="heat_pump",
        timezone="America/New_York",
        location="Garage",
        meta=None,
        disabled=True,
    )
    assert updated == Device(
        id=device.id,
        owner_id=owner.id,
        household_id=device.household_id,
        name="New",
        type="heat_pump",
        timezone="America/New_York",
        location="Garage",
        meta=None,
        disabled=True,
        created_at=device.created_at,
    )
    assert await device_store.get(device.id) == updated
    assert await device_store.update("00000000-0000-0000-0000-000000000000", name="x") is None
    with pytest.raises(ValueError, match="owner_id"):
        await device_store.update(device.id, owner_id=owner.id)


async def test_delete_device(user_store: UserStore, device_store: DeviceStore) -> None:
    owner = await user_store.create("uma@example.com", "h")
    device = await device_store.create(owner.id, "Gone", "other", HASH_A)
    assert await device_store.delete(device.id) is True
    assert await device_store.get(device.id) is None
    assert await device_store.by_key_hash(HASH_A) is None
    assert await device_store.delete(device.id) is False


async def test_roles_and_parents_are_stored_and_a_deleted_parent_frees_its_subs(
    user_store: UserStore, device_store: DeviceStore
) -> None:
    owner = await user_store.create("ursula@example.com", "h")
    meter = await device_store.create(owner.id, "Meter", "meter", HASH_A, role="grid")
    fridge = await device_store.create(
        owner.id, "Fridge", "plug", HASH_B, role="sub", parent_id=meter.id
    )
    kettle = await device_store.create(
        owner.id, "Kettle", "plug", HASH_C, role="consumer", parent_id=meter.id
    )
    assert (fridge.role, fridge.parent_id) == ("sub", meter.id)
    contexts = await device_store.contexts([meter.id, fridge.id])
    assert (contexts[meter.id].role, contexts[meter.id].parent_id) == ("grid", None)
    assert (contexts[fridge.id].role, contexts[fridge.id].parent_id) == ("sub", meter.id)
    # Deleting the meter moves what sat inside it to the top: a sub becomes a consumer.
    assert await device_store.delete(meter.id)
    left = {d.id: (d.role, d.parent_id) for d in await device_store.list([meter.household_id])}
    assert left == {fridge.id: ("consumer", None), kettle.id: ("consumer", None)}


def _downgrade_to_households(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "0003_households")


async def test_devices_of_before_roles_become_top_level_consumers(
    metadata_db: Database,
    user_store: UserStore,
    device_store: DeviceStore,
    household_store: HouseholdStore,
) -> None:
    owner = await user_store.create("vera@example.com", "h")
    [(home, _)] = await household_store.memberships(owner.id)
    async with metadata_db.begin() as conn:
        await conn.run_sync(_downgrade_to_households)
        # A device as 0003_households stored it: no role, no parent.
        await conn.execute(
            text(
                "INSERT INTO devices (id, owner_id, household_id, name, type, api_key_hash,"
                " disabled, created_at)"
                " VALUES ('d-old', :owner, :home, 'Old meter', 'meter', :hash, :no, :at)"
            ),
            {"owner": owner.id, "home": home, "hash": HASH_A, "no": False, "at": NOW},
        )
    await metadata_db.migrate()
    assert await schema_revision(metadata_db) == [HEAD]
    old = await device_store.get("d-old")
    assert old is not None and (old.role, old.parent_id) == ("consumer", None)


async def test_rotated_key_replaces_the_old_one(
    user_store: UserStore, device_store: DeviceStore
) -> None:
    owner = await user_store.create("victor@example.com", "h")
    device = await device_store.create(owner.id, "EV", "ev_charger", HASH_A)
    found = await device_store.by_key_hash(HASH_A)
    assert found is not None and found.id == device.id
    assert await device_store.set_key_hash(device.id, HASH_B) is True
    assert await device_store.by_key_hash(HASH_A) is None
    rotated = await device_store.by_key_hash(HASH_B)
    assert rotated is not None and rotated.id == device.id
    assert await device_store.set_key_hash("00000000-0000-0000-0000-000000000000", HASH_C) is False


async def test_contexts_resolve_zone_tariff_and_enabled_in_one_batch(
    user_store: UserStore, device_store: DeviceStore, household_store: HouseholdStore
) -> None:
    wendy = await user_store.create("wendy@example.com", "h")
    [(wendy_home, _)] = await household_store.memberships(wendy.id)
    await household_store.update(
        wendy_home,
        timezone="Europe/Berlin",
        currency="EUR",
        tariff={"type": "flat", "price_per_kwh": 0.3},
    )
    xavier = await user_store.create("xavier@example.com", "h")
    [(xavier_home, _)] = await household_store.memberships(xavier.id)
    await household_store.update(xavier_home, timezone="Asia/Tokyo", currency="JPY")
    await user_store.update(xavier.id, disabled=True)
    inherits = await device_store.create(wendy.id, "meter", "meter", "1" * 64)
    own_zone = await device_store.create(
        wendy.id, "cabin", "meter", "2" * 64, timezone="Europe/Lisbon"
    )
    switched_off = await device_store.create(wendy.id, "plug", "plug", "3" * 64)
    await device_store.update(switched_off.id, disabled=True)
    owner_off = await device_store.create(xavier.id, "solar", "solar", "4" * 64)
    # Xavier registers a device in Wendy's household: it is priced and dated as hers.
    await household_store.add_member(wendy_home, xavier.id, "member", NOW)
    guest = await device_store.create(xavier.id, "guest", "plug", "5" * 64, household_id=wendy_home)
    flat = {"type": "flat", "price_per_kwh": 0.3}

    asked = [inherits.id, own_zone.id, switched_off.id, owner_off.id, inherits.id, "unknown-id"]
    contexts = await device_store.contexts([*asked, guest.id])
    assert contexts == {
        inherits.id: DeviceContext(
            inherits.id, wendy.id, "meter", "Europe/Berlin", "EUR", flat, True, wendy_home
        ),
        own_zone.id: DeviceContext(
            own_zone.id, wendy.id, "cabin", "Europe/Lisbon", "EUR", flat, True, wendy_home
        ),
        switched_off.id: DeviceContext(
            switched_off.id, wendy.id, "plug", "Europe/Berlin", "EUR", flat, False, wendy_home
        ),
        owner_off.id: DeviceContext(
            owner_off.id, xavier.id, "solar", "Asia/Tokyo", "JPY", None, False, xavier_home
        ),
        # Enabled although the account that registered it is disabled: it belongs to Wendy's
        # household, whose owner is active (Xavier's own solar stops: he is its only owner).
        guest.id: DeviceContext(
            guest.id, xavier.id, "guest", "Europe/Berlin", "EUR", flat, True, wendy_home
        ),
    }
    assert await device_store.contexts([]) == {}

    # Every device of a household, oldest first, disabled ones too; and its settings.
    assert await device_store.in_households([wendy_home]) == [
        contexts[inherits.id],
        contexts[own_zone.id],
        contexts[switched_off.id],
        contexts[guest.id],
    ]
    assert await device_store.in_households(["unknown-id"]) == []
    assert await device_store.household_profiles([xavier_home, "unknown-id"]) == {
        xavier_home: HouseholdProfile(xavier_home, "xavier's home", "Asia/Tokyo", "JPY", None)
    }

    # Wendy, the only owner of her household, disabled: nobody answers for its devices any more.
    await user_store.update(wendy.id, disabled=True)
    assert not any(c.enabled for c in (await device_store.contexts([*asked, guest.id])).values())


async def test_deleting_a_user_deletes_their_devices_and_tokens(
    metadata_db: Database, user_store: UserStore, device_store: DeviceStore
) -> None:
    yara = await user_store.create("yara@example.com", "h")
    zoe = await user_store.create("zoe@example.com", "h")
    gone = await device_store.create(yara.id, "gone", "meter", HASH_A)
    kept = await device_store.create(zoe.id, "kept", "meter", HASH_B)
    await user_store.add_refresh_token(yara.id, HASH_C, LATER)
    await user_store.add_access_token(access_token(yara.id, TOKEN_A), "d" * 64, NOW)

    async with metadata_db.begin() as conn:
        await conn.execute(delete(users).where(users.c.id == yara.id))

    assert await user_store.get(yara.id) is None
    assert await device_store.get(gone.id) is None
    assert await device_store.by_key_hash(HASH_A) is None
    assert await device_store.get(kept.id) == kept
    assert await user_store.use_refresh_token(HASH_C, NOW) is None
    assert await user_store.access_grant(TOKEN_A) is None

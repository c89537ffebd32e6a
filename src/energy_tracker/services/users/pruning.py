"""Refresh tokens are kept a while after they expire, then deleted.

A spent (rotated-out) refresh token that comes back is the sign of a copied token: the account's
sessions are all revoked (`UserStore.use_refresh_token`). The row must outlive the token for that
to work, so an expired token is kept ET_REFRESH_TOKEN_KEEP_DAYS more (by default as long as a
refresh token lives: the successor it was swapped for has expired by then too).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from energy_tracker.core.loops import PruneTask
from energy_tracker.services.users.store import UserStore

EVERY_S = 3600.0


class RefreshTokenPruner(PruneTask):
    """Deletes refresh tokens that expired more than `keep_days` ago, now and every hour."""

    what = "expired refresh token(s)"

    def __init__(self, users: UserStore, keep_days: int, every_s: float = EVERY_S) -> None:
        super().__init__(every_s)
        self.users = users
        self.keep = timedelta(days=keep_days)

    async def prune_at(self, now_ms: int) -> int:
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        return await self.users.prune_refresh_tokens(now - self.keep)

"""Who may use the bot, front-end neutral: the access rules (`bot.access.policy`) applied to what
the store knows, the requests of those not allowed yet, and allowing and denying (/allow,
/deny, /access, `alpaca-bot access`), each answered with the text a person reads."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.access.policy import PREVIEW_CHARS, REQUEST_DAYS, HoldOff, OnAdded, Rules
from bot.errors import UserError
from bot.i18n import N_, _
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import access as store
from bot.store.schema import AccessRequestRow, AccessRow, utcnow

log = logging.getLogger(__name__)

MODES = {
    "pairing": N_("pairing: the admins and those allowed are served; anyone else is asked about."),
    "allowlist": N_("allowlist: only the admins and those allowed are served."),
    "open": N_("open: everyone is served."),
}
SHOWN = 30
"""Names listed per kind in /access; the rest are counted."""


@dataclass(frozen=True)
class Someone:
    """A person or a group as the front end sees them: id, name, and (a person) their
    @username and language."""

    id: int
    name: str | None = None
    username: str | None = None
    language: str | None = None

    def label(self) -> str:
        """How texts name them: "Alice (@alice, 1001)", "Llamas (-100123)"."""
        return label(self.id, self.name, self.username)


def label(some_id: int, name: str | None, username: str | None = None) -> str:
    details = ", ".join(part for part in (f"@{username}" if username else "", str(some_id)) if part)
    return f"{name} ({details})" if name else details


@dataclass(frozen=True)
class StrangerOutcome:
    """What a message of someone not allowed got: the short answer now or not, the request
    made of it (None: none was made now), and whether the admins were asked (now or before)."""

    answer: bool
    request: AccessRequestRow | None
    asked: bool


Decided = Callable[[int, bool, AccessRequestRow | None], Awaitable[None]]
"""Told when an id was allowed (True) or denied, with the request that was waiting, if any."""


class AccessControl:
    """The access policy over the store. Requests and decisions live in the database, so the
    terminal (`alpaca-bot access`) and the running bot see the same."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = Rules(mode=settings.access, admins=frozenset(settings.admins),
                           always=frozenset(settings.allow))
        self._sessions = sessions
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._hold_off = HoldOff()
        self._listeners: list[Decided] = []

    def add_listener(self, listener: Decided) -> None:
        """Call `listener` after every allow and deny made through this object."""
        self._listeners.append(listener)

    def is_admin(self, user_id: int | None) -> bool:
        return self.rules.is_admin(user_id)

    async def allowed(self, some_id: int) -> bool:
        """Whether a user (their private chat) or a group is served."""
        if self.rules.mode == "open" or self.rules.configured(some_id):
            return True
        async with self._sessions() as session:
            return self.rules.allows(some_id, await store.decision(session, some_id))

    async def denied(self, some_id: int) -> bool:
        """Whether an admin denied this id (a group the bot should not stay in)."""
        if self.rules.allows(some_id, None):
            return False
        async with self._sessions() as session:
            return await store.decision(session, some_id) == "denied"

    def refused(self) -> None:
        """Count a message refused because its sender or chat is not allowed."""
        self._metrics.message_refused("access")

    async def stranger(self, person: Someone, text: str) -> StrangerOutcome:
        """A private message from someone not allowed: whether they get the short answer now
        (at most once an hour) and, in pairing mode, their request if this is the first."""
        self.refused()
        now = self._clock()
        async with self._sessions() as session:
            decision = await store.decision(session, person.id)
            pending = await store.request(session, person.id) is not None
            answer = self.rules.on_stranger(decision=decision, pending=pending,
                                            last_answer=self._hold_off.last(person.id), now=now)
            made = None
            if answer.request:
                made = await store.add_request(session, store.NewRequest(
                    person.id, person.name, person.username, person.language,
                    preview=text[:PREVIEW_CHARS],
                ))
                await session.commit()
        if answer.answer:
            self._hold_off.mark(person.id, now)
        return StrangerOutcome(answer.answer, made, asked=pending or made is not None)

    async def group_added(
        self, group: Someone, by: Someone | None
    ) -> tuple[OnAdded, AccessRequestRow | None]:
        """The bot was added to a group by `by`: allowed at once when `by` may use the bot
        (a group an admin denied: only when `by` is an admin), else asked about (pairing:
        the request returned) or left (allowlist)."""
        by_id = by.id if by is not None else None
        async with self._sessions() as session:
            by_decision = await store.decision(session, by_id) if by_id is not None else None
            group_decision = await store.decision(session, group.id)
            action = self.rules.on_added(by=by_id, by_decision=by_decision)
            if action == "ask" and group_decision == "allowed":
                action = "allow"  # approved before: the bot was removed and added again
            if group_decision == "denied" and action != "serve" and not self.is_admin(by_id):
                action = "leave"
            made = None
            if action == "allow" and group_decision != "allowed":
                await store.decide(session, group.id, allowed=True, name=group.name, by=by_id)
            elif action == "ask":
                made = await self._ask(session, group, by)
            await session.commit()
        return action, made

    async def stranger_group(self, group: Someone) -> AccessRequestRow | None:
        """Someone talks to the bot in a group nobody decided about and that has no request
        (the bot was added while it did not hear of it): in pairing mode, asked about."""
        if self.rules.mode != "pairing":
            return None
        async with self._sessions() as session:
            if await store.decision(session, group.id) is not None:
                return None
            if await store.request(session, group.id) is not None:
                return None
            made = await self._ask(session, group, None)
            await session.commit()
        return made

    async def _ask(
        self, session: AsyncSession, group: Someone, by: Someone | None
    ) -> AccessRequestRow:
        await store.drop_request(session, group.id)
        return await store.add_request(session, store.NewRequest(
            group.id, group.name, added_by=by.id if by is not None else None,
            added_by_name=by.label() if by is not None else None,
        ))

    # -- allowing and denying -------------------------------------------------------------

    async def _decide(self, some_id: int, *, allowed: bool, by: int | None) -> str | None:
        """Record the decision on a user or a group (its request, if any, is settled) and tell
        them; their name as known."""
        async with self._sessions() as session:
            waiting = await store.request(session, some_id)
            name = waiting.name if waiting is not None else await self._name(session, some_id)
            await store.decide(session, some_id, allowed=allowed, name=name, by=by)
            await session.commit()
        await self._tell(some_id, allowed, waiting)
        return name

    async def allow(self, some_id: int, *, by: int | None = None) -> str:
        """Allow a user or a group; the text that says so."""
        name = await self._decide(some_id, allowed=True, by=by)
        return _("✅ {who} may use the bot now.", who=label(some_id, name))

    async def deny(self, some_id: int, *, by: int | None = None) -> str:
        """Take access away from a user or a group (one the configuration allows stays)."""
        if self.rules.configured(some_id):
            return _("{who} is allowed by the configuration (`admins` or `allow`): change it "
                     "there.", who=some_id)
        name = await self._decide(some_id, allowed=False, by=by)
        if some_id < 0:
            return _("🚫 The group {who} may no longer use the bot, which leaves it.",
                     who=label(some_id, name))
        return _("🚫 {who} may no longer use the bot.", who=label(some_id, name))

    async def _name(self, session: AsyncSession, some_id: int) -> str | None:
        row = await session.get(AccessRow, some_id)
        return row.name if row is not None else None

    async def _tell(self, some_id: int, allowed: bool, waiting: AccessRequestRow | None) -> None:
        for listener in self._listeners:
            try:
                await listener(some_id, allowed, waiting)
            except Exception:
                log.exception("telling the front end that %s was %s failed", some_id,
                              "allowed" if allowed else "denied")

    async def request(self, some_id: int) -> AccessRequestRow | None:
        async with self._sessions() as session:
            return await store.request(session, some_id)

    async def drop_request(self, some_id: int) -> None:
        async with self._sessions() as session:
            await store.drop_request(session, some_id)
            await session.commit()

    async def unanswered_groups(self, *, older_than: timedelta) -> Sequence[AccessRequestRow]:
        """Groups whose request waited longer than `older_than` (the bot leaves them)."""
        async with self._sessions() as session:
            return await store.requests(session, kind="chat", before=utcnow() - older_than)

    async def prune(self) -> int:
        """Delete requests older than REQUEST_DAYS; returns how many."""
        async with self._sessions() as session:
            pruned = await store.prune_requests(
                session, before=utcnow() - timedelta(days=REQUEST_DAYS))
            await session.commit()
        return pruned

    # -- /access ----------------------------------------------------------------------------

    async def listing(self) -> str:
        """Who is allowed (with names), who was denied, and the requests waiting."""
        async with self._sessions() as session:
            rows = await store.decisions(session)
            waiting = await store.requests(session)
        lines = [_("Access: {mode}", mode=_(MODES[self.rules.mode]))]
        configured = sorted(self.rules.admins | self.rules.always, key=abs)
        if configured:
            lines.append(_("Allowed by the configuration: {ids}",
                           ids=", ".join(str(i) for i in configured)))
        groups = (
            (N_("Allowed users: {names}"), [r for r in rows if r.allowed and r.kind == "user"]),
            (N_("Allowed chats: {names}"), [r for r in rows if r.allowed and r.kind == "chat"]),
            (N_("Denied: {names}"), [r for r in rows if not r.allowed]),
        )
        for heading, chosen in groups:
            if chosen:
                lines.append(_(heading, names=_names([label(r.id, r.name) for r in chosen])))
        if waiting:
            lines.append(_("Waiting for an answer: {names}", names=_names([
                _request_label(row) for row in waiting
            ])))
        if len(lines) == 1 + bool(configured):
            lines.append(_("Nobody else is allowed yet."))
        return "\n".join(lines)


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    if len(items) > SHOWN:
        shown += " " + _("and {n} more", n=len(items) - SHOWN)
    return shown


def _request_label(row: AccessRequestRow) -> str:
    who = label(row.id, row.name, row.username)
    if row.added_by_name:
        return _("{group}, added by {who}", group=who, who=row.added_by_name)
    return who


def parse_id(argument: str, command: str) -> int:
    """The user or chat id a command names (UserError: how to write it)."""
    text = argument.strip()
    try:
        value = int(text)
    except ValueError:
        raise UserError(_(
            "Usage: /{command} ID — a user's id, or a group's (negative); /access lists them.",
            command=command,
        )) from None
    if value == 0:
        raise UserError(_("0 is not a Telegram id."))
    return value

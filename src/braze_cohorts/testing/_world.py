"""The emulator's world: partners, keys, workspaces, users and cohorts.

* **Partners and partner API keys.** Each partner API key belongs to one partner and one region
  (``"US"``, ``"EU"`` or ``"AU"``).
* **Workspaces and data import keys.** A data import key (the body's ``client_secret``) selects a
  workspace. Keys can be created and revoked at any time. A workspace enables a set of partners.
* **Users and matching.** Each workspace knows users: external ids, aliases and device ids.
  Identified users (with an external id or an alias) are matched by external id or alias;
  anonymous users by device id. A device id that belongs to an identified user is ignored, and
  so are unknown ids. A cohort's membership is a set of users.

Nothing here speaks HTTP. Only the standard library is used.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["REGIONS", "Change", "Identifier", "Region", "Workspace", "World"]

#: A cohort member as the emulator reports it: ``("external_id", id)``,
#: ``("alias", alias_name, alias_label)`` or ``("device_id", id)``.
Identifier = tuple[str, ...]

#: What names a user in an out-of-band edit: an :data:`Identifier`, or a plain external id.
UserName = Identifier | str

Region = Literal["US", "EU", "AU"]
REGIONS: tuple[str, ...] = ("US", "EU", "AU")


@dataclasses.dataclass(frozen=True)
class Change:
    """One object of ``cohort_changes``: ids to add, or to remove when ``remove``."""

    remove: bool
    user_ids: list[str]
    device_ids: list[str]
    aliases: list[tuple[str, str]]

    @property
    def ids(self) -> int:
        """How many identifiers the object holds."""
        return len(self.user_ids) + len(self.device_ids) + len(self.aliases)


@dataclasses.dataclass
class _User:
    external_id: str | None
    aliases: tuple[tuple[str, str], ...]
    device_ids: tuple[str, ...]
    identified: bool

    def primary(self) -> Identifier:
        if self.external_id is not None:
            return ("external_id", self.external_id)
        if self.aliases:
            return ("alias", *self.aliases[0])
        return ("device_id", self.device_ids[0])


@dataclasses.dataclass
class _Cohort:
    name: str | None = None
    created_at: str | None = None
    members: set[int] = dataclasses.field(default_factory=set)


class Workspace:
    """One Braze workspace of the emulator: its users, its cohorts and its enabled partners.

    Get one from :meth:`BrazeEmulator.create_workspace` (or ``emulator.workspace``, the default).
    Every method is thread-safe and may be called while the server runs.
    """

    def __init__(self, name: str, partners: Iterable[str], lock: threading.RLock) -> None:
        self._name = name
        self._lock = lock
        self._partners: set[str] = set(partners)
        self._users: list[_User] = []
        self._by_external: dict[str, int] = {}
        self._by_alias: dict[tuple[str, str], int] = {}
        self._by_device: dict[str, int] = {}
        self._cohorts: dict[str, _Cohort] = {}

    def __repr__(self) -> str:
        return f"Workspace(name={self._name!r})"

    @property
    def name(self) -> str:
        """The workspace's name."""
        return self._name

    @property
    def partners(self) -> frozenset[str]:
        """The partners enabled for this workspace."""
        with self._lock:
            return frozenset(self._partners)

    def enable_partner(self, partner: str) -> None:
        """Enable ``partner`` for this workspace."""
        with self._lock:
            self._partners.add(partner)

    def disable_partner(self, partner: str) -> None:
        """Disable ``partner``: its requests get ``401 Partner not enabled for client ...``."""
        with self._lock:
            self._partners.discard(partner)

    def partner_enabled(self, partner: str) -> bool:
        """Whether ``partner`` is enabled for this workspace."""
        with self._lock:
            return partner in self._partners

    # -- users ------------------------------------------------------------------------------

    def add_user(
        self,
        external_id: str | None = None,
        *,
        aliases: Iterable[tuple[str, str]] = (),
        device_ids: Iterable[str] = (),
        identified: bool | None = None,
    ) -> Identifier:
        """Add a known user and return its primary identifier.

        Args:
            external_id: The user's external id, if identified by one.
            aliases: ``(alias_name, alias_label)`` pairs.
            device_ids: The user's device ids.
            identified: Whether the user is identified. Defaults to ``True`` when the user has an
                external id or an alias; an anonymous user is matched only by device id, and the
                device ids of an identified user are ignored.

        Raises:
            ValueError: If the user has no identifier at all, if one of its identifiers already
                belongs to another user, or if ``identified=False`` contradicts an external id.
        """
        alias_pairs = tuple((str(n), str(lbl)) for n, lbl in aliases)
        devices = tuple(device_ids)
        if external_id is None and not alias_pairs and not devices:
            raise ValueError("a user needs an external id, an alias or a device id")
        if identified is None:
            identified = external_id is not None or bool(alias_pairs)
        elif not identified and external_id is not None:
            raise ValueError("a user with an external id is identified")
        with self._lock:
            self._check_free(external_id, alias_pairs, devices)
            uid = len(self._users)
            user = _User(external_id, alias_pairs, devices, identified)
            self._users.append(user)
            if external_id is not None:
                self._by_external[external_id] = uid
            for pair in alias_pairs:
                self._by_alias[pair] = uid
            for device in devices:
                self._by_device[device] = uid
            return user.primary()

    def add_users(self, n: int, *, prefix: str = "user-", start: int = 0) -> list[str]:
        """Add ``n`` identified users with external ids ``f"{prefix}{i}"`` and return the ids.

        Args:
            n: How many users.
            prefix: The start of every external id.
            start: The first number.

        Raises:
            ValueError: If ``n`` is negative or an id already exists.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        ids = [f"{prefix}{i}" for i in range(start, start + n)]
        with self._lock:
            taken = [x for x in ids if x in self._by_external]
            if taken:
                raise ValueError(f"{len(taken)} of these external ids already exist")
            base = len(self._users)
            self._users.extend(_User(x, (), (), True) for x in ids)
            self._by_external.update((x, base + i) for i, x in enumerate(ids))
        return ids

    def load_users(self, source: str | Path | Mapping[str, Any] | Sequence[Any]) -> int:
        """Add users from a ``users.json`` file (or its parsed content); return how many.

        See :meth:`BrazeEmulator.load_users` for the format.

        Raises:
            ValueError: If the content does not have the documented shape.
            OSError: If the file cannot be read.
        """
        data: Any = source
        if isinstance(source, (str, Path)):
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        generate: Any = None
        if isinstance(data, Mapping):
            unknown = set(data) - {"users", "generate"}
            if unknown:
                raise ValueError(f"unknown keys in users file: {', '.join(sorted(unknown))}")
            generate = data.get("generate")
            data = data.get("users", [])
        if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
            raise ValueError("users must be an array of user objects")
        added = 0
        for user in data:
            if not isinstance(user, Mapping) or set(user) - {
                "external_id",
                "aliases",
                "device_ids",
                "identified",
            }:
                raise ValueError(
                    "a user is an object with external_id, aliases, device_ids, identified"
                )
            try:
                aliases = [(a["alias_name"], a["alias_label"]) for a in user.get("aliases", [])]
            except (KeyError, TypeError) as exc:
                raise ValueError(
                    "a user's aliases are objects with alias_name and alias_label"
                ) from exc
            devices = user.get("device_ids", [])
            if (
                not isinstance(user.get("external_id", ""), str)
                or not all(isinstance(x, str) for pair in aliases for x in pair)
                or not isinstance(devices, list)
                or not all(isinstance(d, str) for d in devices)
                or not isinstance(user.get("identified", False), bool)
            ):
                raise ValueError(
                    "a user's external_id, aliases and device_ids are strings, identified a boolean"
                )
            self.add_user(
                user.get("external_id"),
                aliases=aliases,
                device_ids=devices,
                identified=user.get("identified"),
            )
            added += 1
        if generate is not None:
            if not isinstance(generate, Mapping) or not isinstance(generate.get("count"), int):
                raise ValueError('generate must be {"count": N, "prefix": "..."}')
            added += len(self.add_users(generate["count"], prefix=generate.get("prefix", "user-")))
        return added

    def identify(self, device_id: str, external_id: str) -> None:
        """Identify the anonymous user owning ``device_id`` as ``external_id``.

        Afterwards the user is matched by ``external_id`` and no longer by the device id.

        Raises:
            KeyError: If no user has this device id.
            ValueError: If ``external_id`` belongs to another user.
        """
        with self._lock:
            uid = self._by_device[device_id]
            owner = self._by_external.get(external_id)
            if owner is not None and owner != uid:
                raise ValueError("this external id belongs to another user")
            user = self._users[uid]
            if user.external_id is not None and user.external_id != external_id:
                del self._by_external[user.external_id]
            user.external_id = external_id
            user.identified = True
            self._by_external[external_id] = uid

    def user_count(self) -> int:
        """How many users the workspace knows."""
        with self._lock:
            return len(self._users)

    # -- cohorts ----------------------------------------------------------------------------

    def cohorts(self) -> dict[str, str | None]:
        """Every cohort of the workspace, mapped to its name (``None`` if never named)."""
        with self._lock:
            return {cid: c.name for cid, c in self._cohorts.items()}

    def cohort_name(self, cohort_id: str) -> str | None:
        """The cohort's latest name, or ``None`` if members arrived before any name.

        Raises:
            KeyError: If the workspace has no such cohort.
        """
        with self._lock:
            return self._cohorts[cohort_id].name

    def cohort_created_at(self, cohort_id: str) -> str | None:
        """The ``created_at`` of the cohort's first naming, kept through renames.

        ``None`` if the cohort was never named (members arrived first).

        Raises:
            KeyError: If the workspace has no such cohort.
        """
        with self._lock:
            return self._cohorts[cohort_id].created_at

    def members(self, cohort_id: str) -> frozenset[Identifier]:
        """The cohort's members, each as its primary identifier.

        The primary identifier is the external id, else the first alias, else the first device
        id: ``("external_id", "u1")``, ``("alias", name, label)``, ``("device_id", "d1")``.

        Raises:
            KeyError: If the workspace has no such cohort.
        """
        with self._lock:
            cohort = self._cohorts[cohort_id]
            return frozenset(self._users[uid].primary() for uid in cohort.members)

    def remove_members(self, cohort_id: str, users: Iterable[UserName]) -> int:
        """Take users out of a cohort out of band, as an edit in the Braze dashboard would.

        Args:
            cohort_id: The cohort.
            users: Each an :data:`Identifier` (as :meth:`members` returns them) or a plain
                external id. Users who are not members are skipped.

        Returns:
            How many members left.

        Raises:
            KeyError: If the cohort does not exist, or an identifier names no user.
        """
        with self._lock:
            members = self._cohorts[cohort_id].members
            uids = {self._user_of(user) for user in users}
            before = len(members)
            members.difference_update(uids)
            return before - len(members)

    def empty_cohort(self, cohort_id: str) -> int:
        """Remove every member of a cohort out of band; return how many there were.

        Raises:
            KeyError: If the cohort does not exist.
        """
        with self._lock:
            members = self._cohorts[cohort_id].members
            count = len(members)
            members.clear()
            return count

    # -- used by the partner endpoints ------------------------------------------------------

    def name_cohort(self, cohort_id: str, name: str, created_at: str) -> None:
        """Name (or rename) a cohort; the first ``created_at`` stays the cohort's."""
        with self._lock:
            cohort = self._cohorts.setdefault(cohort_id, _Cohort())
            cohort.name = name
            if cohort.created_at is None:
                cohort.created_at = created_at

    def apply(self, cohort_id: str, changes: Sequence[Change]) -> int:
        """Apply ``changes`` in order to a cohort (created unnamed if new); return ids matched."""
        with self._lock:
            cohort = self._cohorts.setdefault(cohort_id, _Cohort())
            members = cohort.members
            by_external = self._by_external
            by_alias = self._by_alias
            by_device = self._by_device
            users = self._users
            matched = 0
            for change in changes:
                uids: list[int] = []
                for x in change.user_ids:
                    uid = by_external.get(x)
                    if uid is not None:
                        uids.append(uid)
                for pair in change.aliases:
                    uid = by_alias.get(pair)
                    if uid is not None:
                        uids.append(uid)
                for d in change.device_ids:
                    uid = by_device.get(d)
                    if uid is not None and not users[uid].identified:
                        uids.append(uid)
                matched += len(uids)
                if change.remove:
                    members.difference_update(uids)
                else:
                    members.update(uids)
            return matched

    def _user_of(self, user: UserName) -> int:
        if isinstance(user, str):
            user = ("external_id", user)
        kind, *rest = user
        uid: int | None = None
        if kind == "external_id" and len(rest) == 1:
            uid = self._by_external.get(rest[0])
        elif kind == "alias" and len(rest) == 2:
            uid = self._by_alias.get((rest[0], rest[1]))
        elif kind == "device_id" and len(rest) == 1:
            uid = self._by_device.get(rest[0])
        if uid is None:
            raise KeyError(f"no user is {tuple(user)!r}")
        return uid

    def _check_free(
        self,
        external_id: str | None,
        aliases: Sequence[tuple[str, str]],
        devices: Sequence[str],
    ) -> None:
        if external_id is not None and external_id in self._by_external:
            raise ValueError("this external id already belongs to a user")
        if any(pair in self._by_alias for pair in aliases):
            raise ValueError("this alias already belongs to a user")
        if any(d in self._by_device for d in devices):
            raise ValueError("this device id already belongs to a user")


@dataclasses.dataclass(frozen=True)
class PartnerKey:
    """What a partner API key stands for."""

    partner: str
    region: str


class World:
    """Every partner key, workspace and data import key of one emulator. Thread-safe.

    Args:
        partners: The partner names served; the first is the default.
        region: The emulator's region; only partner keys of this region are valid on it.
    """

    def __init__(self, partners: Sequence[str], region: str) -> None:
        if not partners or not all(isinstance(p, str) and p for p in partners):
            raise ValueError("partner must be a non-empty name or names")
        _check_region(region)
        self.partners = tuple(partners)
        self.region = region
        self.lock = threading.RLock()
        # Partner API keys stand for a PartnerKey, data import keys for a Workspace.
        self._keys: dict[str, PartnerKey | Workspace] = {}
        self._workspaces: dict[str, Workspace] = {}

    def add_partner_key(
        self, key: str | None = None, *, region: str = "US", partner: str | None = None
    ) -> str:
        """Register a partner API key (random if not given) and return it."""
        _check_region(region)
        if partner is not None and (not isinstance(partner, str) or not partner):
            raise ValueError("partner must be a non-empty name")
        key = key or f"pak-{region.lower()}-{secrets.token_urlsafe(18)}"
        return self._add_key(key, PartnerKey(partner or self.partners[0], region))

    def revoke_partner_key(self, key: str) -> bool:
        """Invalidate a partner API key; return whether it existed."""
        return self._revoke(key, PartnerKey)

    def partner_key(self, key: object) -> PartnerKey | None:
        """What the partner API key ``key`` stands for, if it is registered."""
        found = self._lookup(key)
        return found if isinstance(found, PartnerKey) else None

    def create_workspace(
        self, name: str, *, partners: Iterable[str] | None = None, partner_enabled: bool = True
    ) -> Workspace:
        """Create a workspace; see :meth:`BrazeEmulator.create_workspace`."""
        if not isinstance(name, str) or not name:
            raise ValueError("a workspace needs a non-empty name")
        enabled = (
            (self.partners if partners is None else tuple(partners)) if partner_enabled else ()
        )
        with self.lock:
            if name in self._workspaces:
                raise ValueError(f"workspace {name!r} already exists")
            ws = Workspace(name, enabled, self.lock)
            self._workspaces[name] = ws
            return ws

    def workspaces(self) -> list[Workspace]:
        """Every workspace, in the order they were created."""
        with self.lock:
            return list(self._workspaces.values())

    def get_workspace(self, name: str) -> Workspace:
        """The workspace called ``name`` (``KeyError`` if none)."""
        with self.lock:
            return self._workspaces[name]

    def create_data_import_key(self, workspace: Workspace, *, key: str | None = None) -> str:
        """Create a data import key (random if not given) selecting ``workspace``."""
        key = key or f"dik-{secrets.token_urlsafe(18)}"
        return self._add_key(key, workspace)

    def revoke_data_import_key(self, key: str) -> bool:
        """Invalidate a data import key; return whether it existed."""
        return self._revoke(key, Workspace)

    def workspace_for(self, key: object) -> Workspace | None:
        """The workspace the data import key ``key`` selects, if it is valid."""
        found = self._lookup(key)
        return found if isinstance(found, Workspace) else None

    def key_count(self, workspace: Workspace) -> int:
        """How many valid data import keys select ``workspace``."""
        with self.lock:
            return sum(1 for ws in self._keys.values() if ws is workspace)

    def any_key_in(self, text: str) -> bool:
        """Whether any registered key (partner or data import) occurs in ``text``."""
        with self.lock:
            return any(k in text for k in self._keys)

    def _lookup(self, key: object) -> PartnerKey | Workspace | None:
        with self.lock:
            return self._keys.get(key) if isinstance(key, str) else None

    def _revoke(self, key: str, kind: type[PartnerKey | Workspace]) -> bool:
        with self.lock:
            if not isinstance(self._keys.get(key), kind):
                return False
            del self._keys[key]
            return True

    def _add_key(self, key: object, selects: PartnerKey | Workspace) -> str:
        """Register the new ``key`` for what it ``selects``; return it."""
        if not isinstance(key, str) or not key.strip():
            raise ValueError("a key must be a non-empty string")
        with self.lock:
            if key in self._keys:
                raise ValueError("this key already exists")
            self._keys[key] = selects
        return key


def _check_region(region: str) -> None:
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}")


def identifier_to_json(identifier: Identifier) -> dict[str, str]:
    """An identifier as the admin API shows it.

    ``{"external_id": ...}``, ``{"alias_name": ..., "alias_label": ...}`` or ``{"device_id": ...}``.
    """
    if identifier[0] == "alias":
        return {"alias_name": identifier[1], "alias_label": identifier[2]}
    return {identifier[0]: identifier[1]}


def identifier_from_json(data: object) -> Identifier:
    """The inverse of :func:`identifier_to_json`; a plain string is an external id.

    Raises:
        ValueError: If ``data`` is no identifier.
    """
    if isinstance(data, str):
        return ("external_id", data)
    if isinstance(data, Mapping) and all(isinstance(v, str) for v in data.values()):
        if set(data) == {"external_id"}:
            return ("external_id", data["external_id"])
        if set(data) == {"device_id"}:
            return ("device_id", data["device_id"])
        if set(data) == {"alias_name", "alias_label"}:
            return ("alias", data["alias_name"], data["alias_label"])
    raise ValueError(
        'a user is "external-id", {"external_id": ...}, {"device_id": ...} or '
        '{"alias_name": ..., "alias_label": ...}'
    )

"""Identifier types Braze can match, and their canonical keys.

A user is sent to Braze as exactly one of :class:`ExternalId`, :class:`UserAlias` or
:class:`DeviceId`. Each has a canonical *key* (a ``str``) that is unique across kinds, stable, and
reversible with :func:`ref_from_key`; sets, the state store and plans use keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import attrs

from braze_cohorts.exceptions import InvalidIdentifierError

__all__ = [
    "DeviceId",
    "ExternalId",
    "UserAlias",
    "UserRef",
    "as_ref",
    "ref_from_key",
]

# Key prefixes. The separator inside an alias key is the ASCII unit separator: values may not
# contain control characters, so it can never be part of a value and keys stay unambiguous.
_EXTERNAL = "e:"
_ALIAS = "a:"
_DEVICE = "d:"
_SEP = "\x1f"


def _check_value(kind: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{kind} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidIdentifierError(f"{kind} must not be empty")
    if value != value.strip():
        raise InvalidIdentifierError(f"{kind} must not have surrounding whitespace")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidIdentifierError(f"{kind} must not contain control characters")


def _validate(kind: str) -> Callable[[object, attrs.Attribute[str], str], None]:
    def validator(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
        _check_value(kind, value)

    return validator


@attrs.frozen(slots=True)
class ExternalId:
    """A Braze ``external_id`` (case-sensitive, sent unchanged).

    Args:
        value: The external id.

    Raises:
        InvalidIdentifierError: If the value is empty, padded with whitespace, or has control
            characters.
    """

    value: str = attrs.field(validator=_validate("external id"))

    @property
    def key(self) -> str:
        """The canonical key: unique across identifier kinds."""
        return _EXTERNAL + self.value

    def __str__(self) -> str:
        return self.value


@attrs.frozen(slots=True)
class UserAlias:
    """A Braze user alias: a name within a label (e.g. name ``a@x.io``, label ``email``).

    Args:
        alias_name: The alias name.
        alias_label: The alias label.

    Raises:
        InvalidIdentifierError: If either part is missing or invalid.
    """

    alias_name: str = attrs.field(validator=_validate("alias_name"))
    alias_label: str = attrs.field(validator=_validate("alias_label"))

    @property
    def key(self) -> str:
        """The canonical key: unique across identifier kinds."""
        return f"{_ALIAS}{self.alias_label}{_SEP}{self.alias_name}"

    def __str__(self) -> str:
        return f"{self.alias_label}:{self.alias_name}"


@attrs.frozen(slots=True)
class DeviceId:
    """A device id: how Braze matches anonymous users.

    Args:
        value: The device id.

    Raises:
        InvalidIdentifierError: If the value is empty, padded with whitespace, or has control
            characters.
    """

    value: str = attrs.field(validator=_validate("device id"))

    @property
    def key(self) -> str:
        """The canonical key: unique across identifier kinds."""
        return _DEVICE + self.value

    def __str__(self) -> str:
        return self.value


#: One user as Braze can match them.
UserRef = Union[ExternalId, UserAlias, DeviceId]  # noqa: UP007 - a runtime alias on Python 3.10


def as_ref(value: UserRef | str) -> UserRef:
    """Return ``value`` as an identifier; a plain ``str`` means an external id.

    Raises:
        InvalidIdentifierError: If ``value`` is neither an identifier nor a valid ``str``.
    """
    if isinstance(value, (ExternalId, UserAlias, DeviceId)):
        return value
    if isinstance(value, str):
        return ExternalId(value)
    raise InvalidIdentifierError(
        f"expected ExternalId, UserAlias, DeviceId or str, not {type(value).__name__}"
    )


def ref_from_key(key: str) -> UserRef:
    """Rebuild the identifier whose canonical key is ``key``.

    Raises:
        InvalidIdentifierError: If ``key`` is not a canonical key.
    """
    if key.startswith(_EXTERNAL):
        return ExternalId(key[2:])
    if key.startswith(_DEVICE):
        return DeviceId(key[2:])
    if key.startswith(_ALIAS):
        label, sep, name = key[2:].partition(_SEP)
        if sep:
            return UserAlias(alias_name=name, alias_label=label)
    raise InvalidIdentifierError("not a canonical identifier key")

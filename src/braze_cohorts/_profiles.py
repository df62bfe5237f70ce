"""Named connection profiles: one partner serving many Braze workspaces from one process.

A :class:`ConnectionProfile` names a Braze workspace: its endpoint, the partner, and *where*
its two keys are found — the name of an environment variable or the path of a secret file for
each, never a key. Profiles are kept in the store
(:class:`~braze_cohorts.typing.ProfileStore`); a schedule refers to one by name, and
:class:`~braze_cohorts.ProfileSyncs` makes the sync engine of each profile for
:class:`~braze_cohorts.Scheduler`, so one scheduler process serves every customer.

The keys are read when :meth:`ConnectionProfile.client` is called — at each import — so a
rotated key is picked up without a restart, and a missing one fails only the imports that need
it, with a :class:`~braze_cohorts.ConfigurationError` that names the variable or the file,
never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import attrs

from braze_cohorts._client import CohortClient
from braze_cohorts._endpoints import resolve_endpoint
from braze_cohorts._notify import check_env_name
from braze_cohorts.exceptions import ConfigurationError

__all__ = ["ConnectionProfile"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check_name(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise ConfigurationError(
            f"a profile name must be 1-64 letters, digits, '.', '_' or '-' (starting with a "
            f"letter or digit), not {value!r}"
        )


def _check_endpoint(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    resolve_endpoint(value)  # raises ConfigurationError for an unknown cluster or a bad URL


def _check_partner(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ConfigurationError(f"partner must be a non-empty name without spaces, not {value!r}")


def _env(value: str | None, what: str) -> str | None:
    return None if value is None else check_env_name(value, what)


def _path(value: str | os.PathLike[str] | None, what: str) -> str | None:
    if value is None:
        return None
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"{what} must be a non-empty path")
    return os.path.abspath(os.path.expanduser(text))


def _partner_key_env(value: str | None) -> str | None:
    return _env(value, "partner_api_key_env")


def _import_key_env(value: str | None) -> str | None:
    return _env(value, "data_import_key_env")


def _partner_key_file(value: str | os.PathLike[str] | None) -> str | None:
    return _path(value, "partner_api_key_file")


def _import_key_file(value: str | os.PathLike[str] | None) -> str | None:
    return _path(value, "data_import_key_file")


@attrs.frozen(slots=True, kw_only=True)
class ConnectionProfile:
    """A named Braze workspace: endpoint, partner, and where its two keys are found.

    Each key comes from exactly one place: an environment variable (``*_env``, its *name*) or
    a secret file (``*_file``, its path, e.g. a Docker or Kubernetes secret). The profile holds
    no key; :meth:`client` reads them when called.

    Attributes:
        name: The profile's name (letters, digits, ``.``, ``_``, ``-``), as schedules refer
            to it.
        endpoint: A cluster name (``"US-03"``) or REST URL, as for
            :class:`~braze_cohorts.CohortClient`.
        partner: The partner name in the API path.
        partner_api_key_env: The environment variable holding the partner API key.
        partner_api_key_file: Or the file holding it (stored as an absolute path).
        data_import_key_env: The environment variable holding the workspace's data import key.
        data_import_key_file: Or the file holding it.

    Example:
        >>> import braze_cohorts as bc
        >>> profile = bc.ConnectionProfile(
        ...     name="acme", endpoint="US-03", partner="kubit",
        ...     partner_api_key_env="KUBIT_PARTNER_KEY", data_import_key_env="ACME_IMPORT_KEY")
        >>> profile.sources()
        {'partner_api_key': 'env KUBIT_PARTNER_KEY', 'data_import_key': 'env ACME_IMPORT_KEY'}

    Raises:
        ConfigurationError: If the name, endpoint or partner is invalid, a variable name is not
            a variable's name (a key pasted there is refused without being repeated), or a key
            has no source or two.
    """

    name: str = attrs.field(validator=_check_name)
    endpoint: str = attrs.field(validator=_check_endpoint)
    partner: str = attrs.field(validator=_check_partner)
    partner_api_key_env: str | None = attrs.field(default=None, converter=_partner_key_env)
    partner_api_key_file: str | None = attrs.field(default=None, converter=_partner_key_file)
    data_import_key_env: str | None = attrs.field(default=None, converter=_import_key_env)
    data_import_key_file: str | None = attrs.field(default=None, converter=_import_key_file)

    def __attrs_post_init__(self) -> None:
        for key in ("partner_api_key", "data_import_key"):
            env = getattr(self, f"{key}_env")
            path = getattr(self, f"{key}_file")
            if (env is None) == (path is None):
                raise ConfigurationError(
                    f"profile {self.name!r}: give the {key.replace('_', ' ')} exactly one source, "
                    f"{key}_env (a variable's name) or {key}_file (a secret file's path)"
                )

    def sources(self) -> dict[str, str]:
        """Where each key is read from, as ``"env NAME"`` or ``"file PATH"`` (never a key)."""
        found: dict[str, str] = {}
        for key in ("partner_api_key", "data_import_key"):
            env = getattr(self, f"{key}_env")
            found[key] = f"env {env}" if env is not None else f"file {getattr(self, f'{key}_file')}"
        return found

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (names and paths only; no key)."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConnectionProfile:
        """Rebuild a profile from :meth:`to_dict` output.

        Raises:
            ConfigurationError: If the mapping is not a profile.
        """
        fields = {f.name for f in attrs.fields(cls)}
        if not isinstance(data, Mapping) or set(data) - fields:
            raise ConfigurationError("not a connection profile")
        return cls(**data)

    def _secret(self, key: str) -> str:
        env: str | None = getattr(self, f"{key}_env")
        what = key.replace("_", " ")
        if env is not None:
            value = os.environ.get(env, "").strip()
            if not value:
                raise ConfigurationError(
                    f"profile {self.name!r}: the {what} is read from environment variable "
                    f"{env}, which is not set (or empty) in this process"
                )
            return value
        path: str = getattr(self, f"{key}_file")
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise ConfigurationError(
                f"profile {self.name!r}: the {what} file {path} cannot be read ({reason})"
            ) from None
        if not value:
            raise ConfigurationError(f"profile {self.name!r}: the {what} file {path} is empty")
        return value

    def client(self, **options: Any) -> CohortClient:
        """A :class:`~braze_cohorts.CohortClient` for this workspace, with the keys read now.

        Args:
            **options: Passed to :class:`~braze_cohorts.CohortClient` (``timeout``,
                ``session``, ``pool_size``, …).

        Raises:
            ConfigurationError: If a key's variable is not set or its file cannot be read or is
                empty (the message names the variable or file, never a value), or the client
                refuses the settings.
        """
        return CohortClient(
            self.endpoint,
            partner=self.partner,
            partner_api_key=self._secret("partner_api_key"),
            data_import_key=self._secret("data_import_key"),
            **options,
        )

"""Protocols for the pluggable parts of braze_cohorts.

A plain class (or, where a Protocol has a single ``__call__``, a plain function) that has the
right methods satisfies a Protocol; nothing needs to inherit from these classes. Tests use them
to swap in fakes, and applications use them to wrap or replace a part.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from braze_cohorts._identifiers import UserRef
from braze_cohorts._models import CohortResponse

__all__ = [
    "MembersClient",
]


class MembersClient(Protocol):
    """What :class:`~braze_cohorts.BatchUploader` needs from a client: one membership update.

    :class:`~braze_cohorts.CohortClient` satisfies it. An implementation sends exactly one
    request per call, raises the errors of :mod:`braze_cohorts.exceptions` (with ``retryable``
    set truthfully), and may refuse more than 1,000 ids with a ``ValueError``. It is called
    from several threads at once, so it must be thread-safe.
    """

    def update_members(
        self,
        cohort_id: str,
        add: Iterable[UserRef | str] = (),
        remove: Iterable[UserRef | str] = (),
    ) -> CohortResponse | None:
        """Add and remove users in one request.

        Args:
            cohort_id: The partner's cohort id.
            add: Users to add.
            remove: Users to remove.

        Returns:
            Braze's answer, or ``None`` when there was nothing to send.
        """
        ...

"""SparkDelta: Spark computes who entered and who left against the last snapshot (Parquet).

For membership tables that live in a lake: Spark compares the current members with the
snapshot of the last successful import, and only the entered and left ids travel to Python and
on to :meth:`CohortSync.sync_delta <braze_cohorts.CohortSync.sync_delta>`. The snapshot is
advanced only after the import succeeded (Braze acknowledged every batch).

Layout of the snapshot directory::

    <path>/CURRENT        the name of the current version ("v000007"), replaced atomically
    <path>/v000007/       the members of the last successful import, as Parquet
    <path>/DIRTY          present while an import is running or after one failed

Exactness: while ``DIRTY`` exists (a run failed, or its process died), the next run does not
trust a delta: it streams the members once through :meth:`CohortSync.sync
<braze_cohorts.CohortSync.sync>`, whose store compares them with what Braze acknowledged and
re-sends every uncertain id, then returns to deltas. The first import does the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from braze_cohorts._models import ImportRun
from braze_cohorts.exceptions import ConfigurationError

__all__ = ["SparkDelta"]

log = logging.getLogger(__name__)

_CURRENT = "CURRENT"
_DIRTY = "DIRTY"


def _ids(frame: Any) -> Iterator[str]:
    """The first column of ``frame``'s rows, fetched to Python partition by partition."""
    for row in frame.toLocalIterator():
        yield str(row[0])


class SparkDelta:
    """Sync a cohort from a Spark DataFrame, sending only what changed since the last success.

    Args:
        snapshot_path: A local (or mounted) directory for the Parquet snapshot; created when
            missing. One directory per cohort.
        column: The DataFrame column holding the external ids.

    Example (not run here: it needs a SparkSession)::

        delta = SparkDelta("/lake/braze/power-users")
        members = spark.table("crm.users").where("plan = 'pro'")
        run = delta.sync(sync, "power-users", "Power users", members)
    """

    def __init__(self, snapshot_path: str | os.PathLike[str], *, column: str = "external_id"):
        if not isinstance(column, str) or not column.strip():
            raise ConfigurationError("column must name the DataFrame column of the external ids")
        self._path = Path(snapshot_path)
        self._column = column

    def __repr__(self) -> str:
        return f"SparkDelta({str(self._path)!r})"

    @property
    def path(self) -> Path:
        """The snapshot directory."""
        return self._path

    def current_version(self) -> str | None:
        """The snapshot version of the last successful import, or ``None``."""
        try:
            return (self._path / _CURRENT).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    @property
    def dirty(self) -> bool:
        """Whether the last import failed or never finished (the next one compares in full)."""
        return (self._path / _DIRTY).exists()

    def _members(self, frame: Any) -> Any:
        from pyspark.sql import functions as f

        if self._column not in frame.columns:
            raise ConfigurationError(f"the members DataFrame has no column {self._column!r}")
        ident = f.col(self._column).cast("string")
        return (
            frame.select(ident.alias("external_id"))
            .where(ident.isNotNull() & (f.trim(ident) != ""))
            .distinct()
        )

    def sync(
        self,
        sync: Any,
        cohort_id: str,
        name: str,
        members: Any,
        *,
        full: bool = False,
        dry_run: bool = False,
        **options: Any,
    ) -> ImportRun:
        """Import ``members`` (a Spark DataFrame) into the cohort through ``sync``.

        The members are written as the next snapshot version first (so the delta and the new
        snapshot describe the same rows), then Spark computes ``entered`` (members not in the
        last snapshot) and ``left`` (snapshot ids no longer members) and only those are fetched
        and given to :meth:`CohortSync.sync_delta <braze_cohorts.CohortSync.sync_delta>`. The
        new version becomes current only when the run succeeded; a dry run or a refused run
        leaves everything as it was; a failed run leaves the snapshot and marks it dirty.

        Args:
            sync: The :class:`~braze_cohorts.CohortSync` that sends.
            cohort_id: The partner's cohort id.
            name: The cohort's name in Braze.
            members: A Spark DataFrame with the ``column`` of external ids.
            full: Stream every member through :meth:`CohortSync.sync` (a full comparison in the
                sync engine's store); also what the first import and the run after a failure do.
            dry_run: Compute and report the delta only.
            **options: More keyword arguments for ``sync_delta`` / ``sync`` (``trigger``,
                ``allow_mass_removal``, ``progress``...).

        Returns:
            The recorded run.
        """
        session = members.sparkSession
        self._path.mkdir(parents=True, exist_ok=True)
        previous = self.current_version()
        number = 0 if previous is None else int(previous.lstrip("v")) + 1
        version = f"v{number:06d}"
        staged = self._path / version
        shutil.rmtree(staged, ignore_errors=True)  # a leftover of a run that died
        self._members(members).write.parquet(str(staged))
        current = session.read.parquet(str(staged))
        compare_in_full = full or previous is None or self.dirty
        if not dry_run:
            (self._path / _DIRTY).touch()  # until the run succeeds: a crash leaves it
        try:
            if compare_in_full:
                log.info("cohort %s: comparing every member in the sync engine's store", cohort_id)
                run: ImportRun = sync.sync(
                    cohort_id, name, _ids(current), dry_run=dry_run, **options
                )
            else:
                old = session.read.parquet(str(self._path / str(previous)))
                entered = current.join(old, "external_id", "left_anti")
                left = old.join(current, "external_id", "left_anti")
                run = sync.sync_delta(
                    cohort_id, name, _ids(entered), _ids(left), dry_run=dry_run, **options
                )
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        if run.result == "succeeded":
            self._advance(version, previous)
        else:
            shutil.rmtree(staged, ignore_errors=True)
            if run.result in ("dry_run", "refused") and not compare_in_full:
                # Nothing was sent: the snapshot still describes Braze exactly.
                with contextlib.suppress(FileNotFoundError):
                    (self._path / _DIRTY).unlink()
        return run

    def _advance(self, version: str, previous: str | None) -> None:
        """Make ``version`` current (an atomic rename), then clean up."""
        temp = self._path / f".{_CURRENT}.tmp"
        temp.write_text(version + "\n", encoding="utf-8")
        os.replace(temp, self._path / _CURRENT)
        with contextlib.suppress(FileNotFoundError):
            (self._path / _DIRTY).unlink()
        if previous is not None:
            shutil.rmtree(self._path / previous, ignore_errors=True)

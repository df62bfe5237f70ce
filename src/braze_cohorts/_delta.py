"""The delta machinery: what one import sends, computed in bounded memory.

A :class:`Delta` holds the keys to add and to remove, in memory while small and in temporary
files when large. :class:`Partitions` hash-partitions a stream of desired keys by CRC-32 (in
memory while small, spilled to temporary files beyond that), so a store that diffs in Python
can compare one partition at a time with the matching part of its snapshot. Memory stays
bounded by the size of one partition, whatever the size of the cohort.

Stores keep their keys clustered by :func:`bucket` (the top 10 bits of the key's CRC-32): a
partition is :data:`BUCKETS_PER_PART` consecutive buckets. Nothing here knows of HTTP or of
how a store keeps its rows.
"""

from __future__ import annotations

import collections
import itertools
import operator
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO

__all__ = [
    "BUCKETS_PER_PART",
    "LAST_BUCKET",
    "PARTS",
    "Delta",
    "Partitions",
    "bucket",
    "bucket_rows",
    "chunks",
    "diff",
    "part_buckets",
    "store_order",
]

#: Stored bucket = CRC-32 of the key >> BUCKET_SHIFT (1,024 buckets).
BUCKET_SHIFT = 22
#: Spill partition = CRC-32 >> PART_SHIFT (256 partitions, 4 buckets each).
PART_SHIFT = 24
PARTS = 1 << (32 - PART_SHIFT)
BUCKETS_PER_PART = 1 << (PART_SHIFT - BUCKET_SHIFT)
LAST_BUCKET = (1 << (32 - BUCKET_SHIFT)) - 1
SHIFTS = itertools.repeat(PART_SHIFT)
_BUCKET_SHIFTS = itertools.repeat(BUCKET_SHIFT)
_IN_PART = itertools.repeat(BUCKETS_PER_PART - 1)

#: Keys held in memory before the diff partitions and spills them to temporary files.
MEMORY_KEYS = 200_000
#: Keys read from an input iterable at a time.
CHUNK = 16_384


def bucket(key: str) -> int:
    """The bucket a store keeps ``key`` in: the top 10 bits of its CRC-32."""
    return zlib.crc32(key.encode()) >> BUCKET_SHIFT


def bucket_rows(keys: Iterable[str]) -> list[tuple[int, str]]:
    """``(bucket, key)`` for each key, sorted: the order a store's primary key wants."""
    keys = list(keys)
    return sorted(zip(map(bucket, keys), keys, strict=True))


def store_order(keys: Iterable[str], part: int | None) -> list[str]:
    """``keys`` sorted as a store's primary key is, by bucket then key (see :func:`bucket`).

    ``part``: the partition all keys belong to, or ``None``. Uploading a delta in this order
    makes every write of its acknowledged batches land next to the previous one in the store.
    """
    keys = list(keys)
    if part is None:
        keys.sort()
        keys.sort(key=bucket)  # stable: by key within a bucket
        return keys
    # The bucket within the partition, computed in C as in Partitions.add.
    lists: list[list[str]] = [[] for _ in range(BUCKETS_PER_PART)]
    crcs = map(zlib.crc32, map(str.encode, keys))
    index = map(operator.and_, map(operator.rshift, crcs, _BUCKET_SHIFTS), _IN_PART)
    collections.deque(map(list.append, map(lists.__getitem__, index), keys), 0)
    ordered: list[str] = []
    for in_bucket in lists:
        in_bucket.sort()
        ordered += in_bucket
    return ordered


def part_buckets(part: int | None) -> tuple[int, int]:
    """The first and last bucket of partition ``part`` (``None``: every bucket)."""
    if part is None:
        return 0, LAST_BUCKET
    return part * BUCKETS_PER_PART, (part + 1) * BUCKETS_PER_PART - 1


class _KeyList:
    """An append-only list of keys that moves to a temporary file when it grows large."""

    def __init__(self, tmpdir: Callable[[], str], name: str) -> None:
        self._tmpdir = tmpdir
        self._name = name
        self._memory: list[str] = []
        self._file: IO[str] | None = None
        self._path: str | None = None
        self.count = 0

    def extend(self, keys: Iterable[str]) -> None:
        before = len(self._memory)
        self._memory.extend(keys)
        self.count += len(self._memory) - before
        if len(self._memory) >= MEMORY_KEYS:
            self._flush()

    def _flush(self) -> None:
        if not self._memory:
            return
        if self._file is None:
            self._path = os.path.join(self._tmpdir(), self._name)
            self._file = open(self._path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._file.write("\n".join(self._memory))
        self._file.write("\n")
        self._memory.clear()

    def __iter__(self) -> Iterator[str]:
        return itertools.chain.from_iterable(self.blocks())

    def blocks(self) -> Iterator[list[str]]:
        """The keys in order, as lists of about a megabyte of keys (split in C)."""
        if self._file is not None:
            self._file.flush()
            assert self._path is not None
            with open(self._path, encoding="utf-8", newline="") as f:
                rest = ""
                while block := f.read(1 << 20):
                    keys = (rest + block).split("\n")
                    rest = keys.pop()  # the last line may go on in the next block
                    yield keys
                if rest:
                    yield [rest]
        if self._memory:
            yield list(self._memory)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = []


class Delta:
    """The changes an import sends: keys to add and keys to remove, disjoint, each once.

    A :class:`StateStore <braze_cohorts.typing.StateStore>` returns one from its ``diff``
    methods. Small deltas live in memory; large ones in temporary files, so iterating a delta of
    millions of keys needs little memory. Close it (or use it as a context manager) to delete
    those files. Keys are canonical identifier keys (see :func:`braze_cohorts.ref_from_key`).

    Attributes:
        adds: How many keys to add.
        removes: How many keys to remove.
    """

    def __init__(self) -> None:
        #: How many of the removes Braze is known to hold (the rest are uncertain ids).
        self.held_removes = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._adds = _KeyList(self._tmpdir, "adds")
        self._removes = _KeyList(self._tmpdir, "removes")

    @classmethod
    def from_keys(
        cls, adds: Iterable[str] = (), removes: Iterable[str] = (), *, held_removes: int = 0
    ) -> Delta:
        """Build a delta from keys the caller has already made disjoint and unique.

        Args:
            adds: Keys to add.
            removes: Keys to remove.
            held_removes: How many of ``removes`` Braze is known to hold: the mass-removal
                guard compares this count with the cohort's size, so a store that leaves it at
                0 turns the guard off.
        """
        delta = cls()
        delta.held_removes = held_removes
        for chunk in chunks(adds):
            delta._adds.extend(chunk)
        for chunk in chunks(removes):
            delta._removes.extend(chunk)
        return delta

    def _tmpdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="braze-cohorts-delta-")
        return self._tmp.name

    @property
    def adds(self) -> int:
        """How many keys to add."""
        return self._adds.count

    @property
    def removes(self) -> int:
        """How many keys to remove."""
        return self._removes.count

    def __len__(self) -> int:
        return self.adds + self.removes

    def __repr__(self) -> str:
        return f"Delta(adds={self.adds}, removes={self.removes})"

    def iter_adds(self) -> Iterator[str]:
        """Yield the keys to add."""
        return iter(self._adds)

    def iter_removes(self) -> Iterator[str]:
        """Yield the keys to remove."""
        return iter(self._removes)

    def add_blocks(self) -> Iterator[list[str]]:
        """The keys to add, as lists of many keys at a time (for stores that write in bulk)."""
        return self._adds.blocks()

    def close(self) -> None:
        """Delete the temporary files, if any."""
        self._adds.close()
        self._removes.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Delta:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def chunks(keys: Iterable[str], size: int = CHUNK) -> Iterator[list[str]]:
    it = iter(keys)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Partitions:
    """Desired keys hash-partitioned by CRC-32, in memory while small, else in one spill file.

    Each spill appends every partition's buffered keys to a single temporary file and notes
    where they are: one file, whatever the number of partitions.
    """

    def __init__(self) -> None:
        self._lists: list[list[str]] = [[] for _ in range(PARTS)]
        self._buffered = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._file: IO[bytes] | None = None
        self._segments: list[list[tuple[int, int]]] = [[] for _ in range(PARTS)]

    def add(self, chunk: list[str]) -> None:
        # All in C: list.append(lists[crc32(key.encode()) >> PART_SHIFT], key) for each key,
        # without a bytecode loop (this is the hot path of a 10M-member delta).
        parts = map(operator.rshift, map(zlib.crc32, map(str.encode, chunk)), SHIFTS)
        collections.deque(map(list.append, map(self._lists.__getitem__, parts), chunk), 0)
        self._buffered += len(chunk)
        if self._buffered >= MEMORY_KEYS:
            self._spill()

    def _spill(self) -> None:
        f = self._file
        if f is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="braze-cohorts-diff-")
            path = os.path.join(self._tmp.name, "spill")
            f = self._file = open(path, "w+b")  # noqa: SIM115
        offset = f.seek(0, os.SEEK_END)
        for part, keys in enumerate(self._lists):
            if not keys:
                continue
            data = "\n".join(keys).encode()
            f.write(data)
            self._segments[part].append((offset, len(data)))
            offset += len(data)
            keys.clear()
        self._buffered = 0

    def take(self, part: int) -> set[str]:
        """The distinct keys of one partition (each partition can be taken once)."""
        keys = set(self._lists[part])
        self._lists[part] = []
        f = self._file
        if f is not None:
            for offset, size in self._segments[part]:
                f.seek(offset)
                keys.update(f.read(size).decode().split("\n"))
            self._segments[part] = []
        return keys

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


#: What a store tells :func:`diff` about one partition (``None``: the whole cohort): the keys
#: Braze is known to hold there, the uncertain keys there, and the held keys there that entered
#: recently (re-sent while desired; empty when the store was not asked for them).
ReadPart = Callable[[int | None], tuple[list[str], set[str], set[str]]]


def diff(
    desired: Iterable[str],
    *,
    stored: int,
    read: ReadPart | None,
    full: bool = False,
) -> Delta:
    """Compute what to send so that Braze holds exactly ``desired``, in bounded memory.

    ``adds`` = desired keys Braze is not known to hold, plus desired keys that are uncertain or
    recent entrants (or every desired key when ``full``); ``removes`` = held keys no longer
    desired, plus uncertain keys that are not desired. No key is in both; each is once.

    Args:
        desired: Every desired key, streamed (duplicates are fine).
        stored: How many keys the store holds for the cohort (held + uncertain): at or above
            :data:`MEMORY_KEYS` the desired keys are partitioned (and spilled) from the start.
        read: Reads one partition's held, uncertain and recently entered keys (``None`` when
            the store has nothing for the cohort). Memory stays bounded by one partition.
        full: Re-send every desired key as an add (a full resync).

    Raises:
        OSError: If the temporary files fail (the caller translates it).
    """
    delta = Delta()
    parts: Partitions | None = None
    try:
        memory: list[str] | None = [] if stored < MEMORY_KEYS else None
        if memory is None:
            parts = Partitions()
        for chunk in chunks(desired):
            if memory is not None:
                memory.extend(chunk)
                if len(memory) < MEMORY_KEYS:
                    continue
                parts = Partitions()
                parts.add(memory)
                memory = None
            else:
                assert parts is not None
                parts.add(chunk)
        if memory is not None:
            _diff_part(delta, set(memory), read, None, full)
        else:
            assert parts is not None
            for part in range(PARTS):
                _diff_part(delta, parts.take(part), read, part, full)
    except BaseException:
        delta.close()
        raise
    finally:
        if parts is not None:
            parts.close()
    return delta


def _diff_part(
    delta: Delta,
    want: set[str],
    read: ReadPart | None,
    part: int | None,
    full: bool,
) -> None:
    if read is None:
        delta._adds.extend(store_order(want, part))
        return
    held, unsure, recent = read(part)  # held is distinct: the stores' primary key
    if full:
        adds: Iterable[str] = want
    else:
        adds = want.difference(held)
        if unsure:
            adds |= want & unsure
        if recent:  # recent keys are held keys; the set operation iterates the smaller side
            adds |= want & recent
    delta._adds.extend(store_order(adds, part))
    gone = list(itertools.filterfalse(want.__contains__, held))  # in C
    delta._removes.extend(gone)
    delta.held_removes += len(gone)
    if unsure:  # uncertain keys that are neither desired nor known to be held
        delta._removes.extend((unsure - want).difference(held))

"""The public surface: everything in ``__all__`` exists, is sorted, and nothing private leaks."""

from __future__ import annotations

import braze_cohorts


class TestExportedMembers:
    def test_all_names_exist(self) -> None:
        """Every name in ``__all__`` is importable from the package."""
        for name in braze_cohorts.__all__:
            assert hasattr(braze_cohorts, name), name

    def test_all_is_sorted_and_unique(self) -> None:
        """``__all__`` is sorted (case-sensitively) and has no duplicates."""
        names = list(braze_cohorts.__all__)
        assert names == sorted(set(names))

    def test_no_private_names_exported(self) -> None:
        """Only public names (and ``__version__``) are exported."""
        assert all(not n.startswith("_") or n == "__version__" for n in braze_cohorts.__all__)

    def test_public_classes_claim_the_package(self) -> None:
        """Exported classes and functions defined in private modules are documented as public."""
        for name in braze_cohorts.__all__:
            obj = getattr(braze_cohorts, name)
            if isinstance(obj, type):
                assert obj.__module__.startswith("braze_cohorts"), name

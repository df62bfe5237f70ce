"""The emulator's parts: its independence, fault kinds, cohort dates and out-of-band edits."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from braze_cohorts.testing import BrazeEmulator, Fault, FaultKind

TESTING = Path(__file__).resolve().parents[1] / "src" / "braze_cohorts" / "testing"
CREATED_AT = "2026-11-28T12:00:00+00:00"


@pytest.fixture
def emulator(braze_emulator: BrazeEmulator) -> BrazeEmulator:
    return braze_emulator


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def post(
    session: requests.Session, emulator: BrazeEmulator, endpoint: str, **body: object
) -> requests.Response:
    payload = {
        "partner_api_key": emulator.partner_api_key,
        "client_secret": emulator.data_import_key,
        **body,
    }
    return session.post(f"{emulator.url}/partners/kubit/{endpoint}", json=payload, timeout=10)


def imported_names(module: str) -> list[str]:
    """Every module name ``testing/<module>.py`` imports (absolute imports only)."""
    tree = ast.parse((TESTING / f"{module}.py").read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports hide where a name comes from"
            names.append(node.module or "")
    return names


def emulator_modules() -> set[str]:
    """The facade's module and every testing module it reaches through imports."""
    seen: set[str] = set()
    todo = ["_emulator"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        prefix = "braze_cohorts.testing."
        todo.extend(n.removeprefix(prefix) for n in imported_names(module) if n.startswith(prefix))
    return seen


class TestIndependence:
    def test_emulator_imports_only_the_standard_library(self) -> None:
        """No emulator module imports braze_cohorts outside braze_cohorts.testing, nor a
        third-party package: a client bug cannot hide behind shared code."""
        modules = emulator_modules()
        assert modules >= {
            "_admin",
            "_emulator",
            "_faults",
            "_partner",
            "_records",
            "_wire",
            "_world",
        }
        for module in sorted(modules):
            for name in imported_names(module):
                top = name.split(".")[0]
                if top == "braze_cohorts":
                    assert name.startswith("braze_cohorts.testing._"), (module, name)
                else:
                    assert top in sys.stdlib_module_names, (module, name)


class TestFaultKinds:
    def test_kinds_are_an_enum_whose_values_are_the_old_strings(
        self, emulator: BrazeEmulator, session: requests.Session
    ) -> None:
        """Records hold FaultKind members, which still equal the strings tests compared."""
        emulator.fail_next(1)
        emulator.succeed_with_errors_next(1)
        post(session, emulator, "cohorts", cohort_id="c", name="n", created_at=CREATED_AT)
        post(session, emulator, "cohorts", cohort_id="c", name="n", created_at=CREATED_AT)
        faults = [r.fault for r in emulator.request_log]
        assert faults == [FaultKind.FAIL, FaultKind.ERRORS]
        assert all(isinstance(f, FaultKind) for f in faults)
        assert faults == ["fail", "errors"]
        assert [str(f) for f in faults] == ["fail", "errors"]

    def test_a_dropped_applied_request_is_logged_once(
        self, emulator: BrazeEmulator, session: requests.Session
    ) -> None:
        """A request answered by drop_after_apply has exactly one record, applied and unanswered."""
        emulator.add_user("u1")
        emulator.drop_next(when="after_apply")
        with pytest.raises(requests.ConnectionError):
            post(
                session,
                emulator,
                "cohorts/users",
                cohort_id="c",
                cohort_changes=[{"user_ids": ["u1"]}],
            )
        [record] = emulator.request_log
        assert (record.status, record.message, record.applied, record.matched) == (
            None,
            "",
            True,
            1,
        )
        assert record.fault is FaultKind.DROP_AFTER_APPLY

    def test_rate_limited_is_no_fault_to_inject(self, emulator: BrazeEmulator) -> None:
        """RATE_LIMITED names the limit's answer; it cannot be queued."""
        with pytest.raises(ValueError, match="cannot be injected"):
            emulator.inject(Fault(FaultKind.RATE_LIMITED))

    def test_json_form_round_trips(self) -> None:
        """A fault read from JSON shows the same JSON back."""
        data = {"kind": "fail", "n": 2, "path": "/cohorts/users", "status": 429, "retry_after": 3}
        assert Fault.from_json(data).to_json() == data
        errors = {"kind": "errors", "n": 1, "errors": ["x"]}
        assert Fault.from_json(errors).to_json() == errors


class TestCohortDates:
    def test_a_rename_keeps_the_first_created_at(
        self, emulator: BrazeEmulator, session: requests.Session
    ) -> None:
        """Braze keeps a cohort's creation date: a rename with another date changes the name."""
        post(session, emulator, "cohorts", cohort_id="c", name="One", created_at=CREATED_AT)
        later = "2026-12-01T00:00:00Z"
        post(session, emulator, "cohorts", cohort_id="c", name="Two", created_at=later)
        assert emulator.cohort_name("c") == "Two"
        assert emulator.cohort_created_at("c") == CREATED_AT
        assert [r.created_at for r in emulator.request_log] == [CREATED_AT, later]

    def test_a_cohort_named_after_its_members_takes_that_date(
        self, emulator: BrazeEmulator, session: requests.Session
    ) -> None:
        """Members first: no date until the first name arrives."""
        post(session, emulator, "cohorts/users", cohort_id="c", cohort_changes=[])
        assert emulator.cohort_created_at("c") is None
        post(session, emulator, "cohorts", cohort_id="c", name="n", created_at=CREATED_AT)
        assert emulator.cohort_created_at("c") == CREATED_AT
        with pytest.raises(KeyError):
            emulator.cohort_created_at("other")


class TestOutOfBandEdits:
    def test_remove_members_by_identifier_or_external_id(
        self, emulator: BrazeEmulator, session: requests.Session
    ) -> None:
        """Members can be removed as members() names them, or by plain external id."""
        emulator.add_users(3, prefix="u")
        emulator.add_user(aliases=[("a@x.io", "email")])
        changes = [
            {
                "user_ids": ["u0", "u1", "u2"],
                "aliases": [{"alias_name": "a@x.io", "alias_label": "email"}],
            }
        ]
        post(session, emulator, "cohorts/users", cohort_id="c", cohort_changes=changes)
        removed = emulator.remove_members("c", ["u0", ("alias", "a@x.io", "email"), "u0"])
        assert removed == 2
        assert emulator.members("c") == {("external_id", "u1"), ("external_id", "u2")}
        with pytest.raises(KeyError):
            emulator.remove_members("c", ["nobody"])
        with pytest.raises(KeyError):
            emulator.remove_members("no-such-cohort", ["u1"])
        assert emulator.empty_cohort("c") == 2
        assert emulator.members("c") == frozenset()
        assert len(emulator.request_log) == 1

    def test_not_enabled_workspace_from_python(
        self, emulator: BrazeEmulator, session: requests.Session
    ) -> None:
        """add_workspace(partner_enabled=False) refuses the partner with Braze's echoing 401."""
        ws = emulator.add_workspace("closed", partner_enabled=False)
        key = emulator.create_data_import_key(ws)
        assert emulator.data_import_key_count(ws) == 1
        response = session.post(
            f"{emulator.url}/partners/kubit/cohorts",
            json={
                "partner_api_key": emulator.partner_api_key,
                "client_secret": key,
                "cohort_id": "c",
                "name": "n",
                "created_at": CREATED_AT,
            },
            timeout=10,
        )
        assert (response.status_code, response.json()) == (
            401,
            {"message": f"Partner not enabled for client with client secret: {key}"},
        )
        assert key not in json.dumps(emulator.request_log[-1].to_json())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
FAULT_FIELDS = ["kind", "n", "status", "retry_after", "path", "location", "errors", "headers"]


class TestFaultJson:
    @given(
        st.dictionaries(
            st.sampled_from(FAULT_FIELDS),
            JSON | st.sampled_from(["fail", "redirect", "errors", "drop_after_apply"]),
            max_size=5,
        )
    )
    def test_any_json_is_a_fault_or_a_value_error(self, data: dict[str, object]) -> None:
        """Whatever an admin client posts, the fault is built or refused with ValueError (a
        400), never another exception (a 500); a built one shows itself back as JSON."""
        try:
            fault = Fault.from_json(data)
        except ValueError:
            return
        again = Fault.from_json(fault.to_json())
        assert (again.kind, again.times, again.path, again.status) == (
            fault.kind,
            fault.times,
            fault.path,
            fault.status,
        )

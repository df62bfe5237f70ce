"""``braze-cohorts emulator`` run as a process: its flags and admin API over real HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from braze_cohorts import (
    AuthenticationError,
    BatchUploader,
    CohortClient,
    RateLimitedError,
    RetryPolicy,
    ServerError,
)
from braze_cohorts.cli import main
from braze_cohorts.testing import BrazeEmulator
from braze_cohorts.testing._wire import connect_host, url_for
from helpers import emulator_client


class Served:
    """What a running ``braze-cohorts emulator`` printed: its URL, keys and admin URL."""

    def __init__(self, settings: dict[str, str], banner: str, admin: str | None) -> None:
        self.settings = settings
        self.banner = banner
        self.admin = admin
        self.url = settings["BRAZE_REST_ENDPOINT"]

    def client(self, **overrides: str) -> CohortClient:
        options = {
            "partner": self.settings["BRAZE_PARTNER"],
            "partner_api_key": self.settings["BRAZE_PARTNER_API_KEY"],
            "data_import_key": self.settings["BRAZE_DATA_IMPORT_KEY"],
            **overrides,
        }
        return CohortClient(self.url, **options)

    def get(self, path: str) -> Any:
        assert self.admin is not None
        response = requests.get(self.admin + path, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.contextmanager
def emulator_process(*flags: str) -> Iterator[Served]:
    """Run ``braze-cohorts emulator --port 0 FLAGS`` until the block ends, then SIGTERM it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "braze_cohorts.cli", "emulator", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Press Ctrl-C"):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "no output"
            lines.append(line.strip())
        settings = dict(
            line.removeprefix("export ").split("=", 1)
            for line in lines
            if line.startswith("export ")
        )
        admin = next(
            (line.split()[2].rstrip("/") for line in lines if line.startswith("Admin API:")), None
        )
        yield Served(settings, lines[0], admin)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def fast_uploader(client: CohortClient) -> BatchUploader:
    return BatchUploader(
        client,
        sleep=lambda _s: None,
        retry=RetryPolicy(initial_backoff=0.001, max_backoff=0.001),
    )


class TestFaultFlags:
    def test_fail_with_status_hits_the_named_path_then_recovers(self) -> None:
        """``--fail 2 --status 502 --fault-path /cohorts/users`` spares the name endpoint."""
        with (
            emulator_process(
                "--add-users",
                "1",
                "--fail",
                "2",
                "--status",
                "502",
                "--fault-path",
                "/cohorts/users",
            ) as served,
            served.client() as client,
        ):
            client.name_cohort("c1", "C")
            for _ in range(2):
                with pytest.raises(ServerError) as info:
                    client.update_members("c1", add=["user-0"])
                assert info.value.status_code == 502
            client.update_members("c1", add=["user-0"])
            cohort = served.get("/cohorts/c1")
            requests_seen = served.get("/requests")
        assert cohort == {
            "cohort_id": "c1",
            "name": "C",
            "created_at": cohort["created_at"],
            "member_count": 1,
            "members": [{"external_id": "user-0"}],
        }
        statuses = [r["status"] for r in requests_seen["requests"]]
        assert statuses == [200, 502, 502, 200]

    def test_rate_limit_flag_answers_429_past_the_limit(self) -> None:
        """``--rate-limit 2`` lets two requests through in the window, then 429."""
        with emulator_process("--rate-limit", "2") as served, served.client() as client:
            client.name_cohort("c1", "C")
            client.name_cohort("c1", "C")
            with pytest.raises(RateLimitedError) as info:
                client.name_cohort("c1", "C")
            state = served.get("/")
        assert info.value.retry_after is not None
        assert state["rate_limit"] == {"requests_per_hour": 2, "window": 3600.0}

    def test_lost_answers_and_2xx_errors_still_converge(self, tmp_path: Path) -> None:
        """``--drop-after-apply`` and ``--succeed-with-errors``: the uploader retries and the
        cohort still holds exactly the users Braze knows."""
        users = tmp_path / "users.json"
        users.write_text(json.dumps({"generate": {"count": 3, "prefix": "u"}}))
        flags = ("--users", str(users), "--drop-after-apply", "1", "--succeed-with-errors", "1")
        with emulator_process(*flags, "--latency", "0.001") as served, served.client() as client:
            assert "3 users" in served.banner
            report = fast_uploader(client).upload("c1", add=["u0", "u1", "u2", "ghost"])
            cohort = served.get("/cohorts/c1")
            log = served.get("/requests")
            state = served.get("/")
        assert report.ok
        assert cohort["member_count"] == 3
        faults = [r["fault"] for r in log["requests"]]
        assert faults == ["drop_after_apply", "errors"]
        assert state["latency"] == {"fixed": 0.001, "jitter": 0.0}

    def test_partner_not_enabled_flag_refuses_every_request(self) -> None:
        """``--partner-not-enabled`` answers Braze's 401 text, echoing the key as Braze does."""
        with emulator_process("--partner-not-enabled") as served:
            key = served.settings["BRAZE_DATA_IMPORT_KEY"]
            response = requests.post(
                f"{served.url}/partners/kubit/cohorts",
                json={
                    "partner_api_key": served.settings["BRAZE_PARTNER_API_KEY"],
                    "client_secret": key,
                    "cohort_id": "c1",
                    "name": "C",
                    "created_at": "2026-01-01T00:00:00Z",
                },
                timeout=10,
            )
        assert response.status_code == 401
        assert response.json()["message"] == (
            f"Partner not enabled for client with client secret: {key}"
        )

    def test_negative_fault_count_is_a_usage_error(self) -> None:
        """A negative count is refused (exit 2) before anything listens."""
        assert main(["emulator", "--port", "0", "--fail", "-1"]) == 2


class TestAdminThroughTheCommand:
    def test_ci_rehearsal_of_a_revoked_key_and_an_emptied_cohort(self) -> None:
        """Through the command's admin API alone: a user created late, a key revoked, a
        cohort emptied out of band, a new key issued."""
        with emulator_process() as served:
            admin = served.admin
            assert admin is not None
            with served.client() as client:
                client.update_members("c1", add=["late"])
                requests.post(admin + "/users", json=[{"external_id": "late"}], timeout=10)
                client.update_members("c1", add=["late"])
                assert served.get("/cohorts/c1")["member_count"] == 1
                requests.delete(admin + "/cohorts/c1/members", timeout=10)
                assert served.get("/cohorts/c1")["member_count"] == 0
                old_key = served.settings["BRAZE_DATA_IMPORT_KEY"]
                requests.delete(f"{admin}/data-import-keys/{old_key}", timeout=10)
                with pytest.raises(AuthenticationError):
                    client.update_members("c1", add=["late"])
            new = requests.post(admin + "/data-import-keys", json={}, timeout=10).json()
            with served.client(data_import_key=new["data_import_key"]) as client:
                client.update_members("c1", add=["late"])
            assert served.get("/cohorts/c1")["member_count"] == 1

    def test_no_admin_flag_leaves_only_braze(self) -> None:
        """``--no-admin`` prints no admin URL and the prefix is an unknown path."""
        with emulator_process("--no-admin") as served:
            assert served.admin is None
            response = requests.get(served.url + "/_emulator/", timeout=10)
        assert response.status_code == 404


class TestPrintedUrl:
    @pytest.mark.parametrize(
        ("bind", "url"),
        [
            ("0.0.0.0", "http://127.0.0.1:8080"),
            ("", "http://127.0.0.1:8080"),
            ("::", "http://[::1]:8080"),
            ("0:0:0:0:0:0:0:0", "http://[::1]:8080"),
            ("127.0.0.1", "http://127.0.0.1:8080"),
            ("::1", "http://[::1]:8080"),
            ("localhost", "http://localhost:8080"),
            ("192.168.1.7", "http://192.168.1.7:8080"),
        ],
    )
    def test_a_wildcard_bind_prints_a_loopback_url(self, bind: str, url: str) -> None:
        """A wildcard address is no address to connect to: loopback of its family instead."""
        assert url_for(bind, 8080) == url

    @pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
    def test_the_client_accepts_the_url_of_a_wildcard_emulator(self, bind: str) -> None:
        """What ``--host 0.0.0.0`` prints as BRAZE_REST_ENDPOINT is a URL the client takes
        (checked without binding a wildcard: the emulator is never started)."""
        emulator = BrazeEmulator(host=bind, port=8080)
        assert connect_host(bind) in emulator.url
        assert emulator.host == bind
        with emulator_client(emulator) as client:
            assert repr(client)

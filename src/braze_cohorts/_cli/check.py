"""``braze-cohorts check``: verify the endpoint, the partner and both keys; change nothing."""

from __future__ import annotations

import argparse
from typing import Any

import braze_cohorts as bc
from braze_cohorts._cli.common import add_credential_args, credentials, fail

__all__ = ["register"]

# What each AuthenticationError.cause means, for the one line the command prints.
_REFUSED = {
    "partner_api_key": "Braze refused the partner API key (wrong key, or one for another "
    "region's clusters)",
    "data_import_key": "Braze refused the data import key (revoked, replaced, or of another "
    "workspace?)",
    "partner_not_enabled": "the data import key was recognised, but its workspace has not "
    "enabled the partner integration (enable it there under Partner integrations > Technology "
    "partners, or use the key of the workspace where it is enabled)",
    "unknown": "Braze refused the credentials without saying which (check the partner name "
    "and the partner API key)",
}


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand."""
    check = subparsers.add_parser(
        "check",
        help="verify the endpoint, partner and both keys without changing any cohort",
        description=(
            "Send one request that changes no cohort's members (it removes a user who cannot "
            "exist from a probe cohort) and say whether Braze accepted the endpoint, the "
            "partner and both keys, or which one it refused. Exit 0: accepted; 1: refused or "
            "unreachable; 2: missing or invalid settings."
        ),
    )
    add_credential_args(check)
    check.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    try:
        creds = credentials(args)
        with bc.CohortClient(
            creds["endpoint"],
            partner=creds["partner"],
            partner_api_key=creds["partner_api_key"],
            data_import_key=creds["data_import_key"],
        ) as client:
            result = client.check()
    except bc.ConfigurationError as exc:
        return fail(str(exc), 2)
    except bc.AuthenticationError as exc:
        # Braze's own text after the explanation; the error's advice is already in the latter.
        braze_said = bc.APIError.__str__(exc)
        return fail(f"{_REFUSED.get(exc.cause, _REFUSED['unknown'])}: {braze_said}", 1)
    except bc.TransportError as exc:
        return fail(f"could not reach the endpoint: {exc}", 1)
    except bc.UnexpectedResponseError as exc:
        return fail(f"the endpoint did not answer as Braze's partner API (wrong URL?): {exc}", 1)
    except bc.BrazeCohortsError as exc:
        return fail(f"Braze refused the check: {exc}", 1)
    print(f"ok: {result}")
    return 0

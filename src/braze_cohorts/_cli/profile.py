"""``braze-cohorts profile add|list|remove``: named Braze connections kept in the state database.

A profile stores the endpoint, the partner and *where* each key is found (an environment
variable's name or a secret file's path), never a key: nothing this command prints or stores
can leak one. Schedules refer to a profile with ``schedule set --profile NAME``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import braze_cohorts as bc
from braze_cohorts._cli.common import add_state_arg, fail, open_state, table

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``profile`` subcommand."""
    profile: argparse.ArgumentParser = subparsers.add_parser(
        "profile",
        help="add, list or remove named Braze connections (one per customer workspace)",
        description=(
            "Manage connection profiles: a name, an endpoint, a partner, and where each key is "
            "found (an environment variable's name or a secret file's path), never a key. "
            "Schedules refer to one with `schedule set --profile NAME`, so one `run-due` or "
            "`scheduler` serves every workspace."
        ),
    )
    actions = profile.add_subparsers(dest="profile_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add (or with --replace, change) a profile")
    add.add_argument("name", metavar="NAME", help="the profile's name (letters, digits, . _ -)")
    add.add_argument("--endpoint", required=True, help="cluster name (US-03) or REST URL")
    add.add_argument("--partner", required=True, help="partner name in the API path")
    partner_key = add.add_mutually_exclusive_group(required=True)
    partner_key.add_argument(
        "--partner-api-key-env", metavar="VAR", help="variable holding the partner API key"
    )
    partner_key.add_argument(
        "--partner-api-key-file", metavar="PATH", help="file holding the partner API key"
    )
    import_key = add.add_mutually_exclusive_group(required=True)
    import_key.add_argument(
        "--data-import-key-env", metavar="VAR", help="variable holding the data import key"
    )
    import_key.add_argument(
        "--data-import-key-file", metavar="PATH", help="file holding the data import key"
    )
    add.add_argument("--replace", action="store_true", help="replace a profile of that name")
    add_state_arg(add, creates=True, sql_store=True)
    add.set_defaults(handler=_run_add)

    list_ = actions.add_parser("list", help="list the profiles (never a key)")
    list_.add_argument("--json", action="store_true", help="print JSON Lines, one profile a line")
    add_state_arg(list_, sql_store=True)
    list_.set_defaults(handler=_run_list)

    remove = actions.add_parser("remove", help="remove a profile no schedule uses")
    remove.add_argument("name", metavar="NAME", help="the profile's name")
    remove.add_argument(
        "--force", action="store_true", help="remove it even if schedules use it (they will fail)"
    )
    add_state_arg(remove, sql_store=True)
    remove.set_defaults(handler=_run_remove)


def _run_add(args: argparse.Namespace) -> int:
    try:
        profile = bc.ConnectionProfile(
            name=args.name,
            endpoint=args.endpoint,
            partner=args.partner,
            partner_api_key_env=args.partner_api_key_env,
            partner_api_key_file=args.partner_api_key_file,
            data_import_key_env=args.data_import_key_env,
            data_import_key_file=args.data_import_key_file,
        )
        store = open_state(args, write=True, create=True)
        try:
            store.put_profile(profile, replace=args.replace)
        finally:
            store.close()
    except bc.ConfigurationError as exc:
        return fail(str(exc), 2)
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    sources = profile.sources()
    print(
        f"{profile.name}: {bc.resolve_endpoint(profile.endpoint)} partner {profile.partner}; "
        f"partner API key from {sources['partner_api_key']}, data import key from "
        f"{sources['data_import_key']}"
    )
    return 0


def _run_list(args: argparse.Namespace) -> int:
    try:
        store = open_state(args, write=False)
    except bc.ConfigurationError as exc:
        return fail(str(exc), 2)
    try:
        try:
            profiles = store.list_profiles()
            schedules = store.list_schedules()
        finally:
            store.close()
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    used: dict[str, int] = {}
    for entry in schedules:
        if entry.profile is not None:
            used[entry.profile] = used.get(entry.profile, 0) + 1
    if args.json:
        for profile in profiles:
            data = profile.to_dict()
            data["schedules"] = used.get(profile.name, 0)
            print(json.dumps(data, sort_keys=True))
        return 0
    if not profiles:
        print("no profiles")
        return 0
    header = ("profile", "endpoint", "partner", "partner API key", "data import key", "schedules")
    rows: list[tuple[str, ...]] = [header]
    for profile in profiles:
        sources = profile.sources()
        rows.append(
            (
                profile.name,
                profile.endpoint,
                profile.partner,
                sources["partner_api_key"],
                sources["data_import_key"],
                str(used.get(profile.name, 0)),
            )
        )
    print("\n".join(table(rows)))
    return 0


def _run_remove(args: argparse.Namespace) -> int:
    try:
        store = open_state(args, write=True)
    except bc.ConfigurationError as exc:
        return fail(str(exc), 2)
    try:
        try:
            users = sorted(
                e.cohort_id
                for e in store.list_schedules()
                if e.profile == args.name and e.state != "done"
            )
            if users and not args.force:
                return fail(
                    f"profile {args.name!r} is used by the schedules of {', '.join(users)}: "
                    "set them to another profile or clear them first (or pass --force)",
                    1,
                )
            removed = store.delete_profile(args.name)
        finally:
            store.close()
    except bc.BrazeCohortsError as exc:
        return fail(str(exc), 1)
    if not removed:
        return fail(f"no profile called {args.name!r}", 1)
    print(f"{args.name}: profile removed")
    return 0

"""``pgplane``: run one process of the platform, the whole platform locally, or an operator command.

Operator commands (``migrate``, ``replay``) read the settings the local stack wrote into its state
directory (``pgplane.env``), under whatever ``PGPLANE_*`` variables are set; they give up within
seconds when a server does not answer, and exit 2 on any error (``replay`` exits 1 for drift).

Every process runs its event loop on uvloop, and the API reads HTTP with httptools: the same
code, a few percent less CPU per request and per event than asyncio's own loop and h11.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from infra import logs
from infra.faults import NO_FAULTS, Faults
from infra.settings import Settings

T = TypeVar("T")
OPERATOR_ENV = "pgplane.env"
GRACEFUL_SHUTDOWN_SECONDS = 5


def _fail_cleanly(work: Callable[[], T]) -> T:
    """Run ``work``; a server that does not answer or a schema this release cannot use ends the
    process with one line and exit 2."""
    from consumers.agent.ledger_schema import LedgerOutOfDate
    from infra.errors import Unreachable
    from infra.metadata.migrate import SchemaOutOfDate

    try:
        return work()
    except Unreachable as exc:
        print(f"pgplane: cannot reach {exc}", file=sys.stderr)
    except (SchemaOutOfDate, LedgerOutOfDate) as exc:
        print(f"pgplane: {exc}", file=sys.stderr)
    raise SystemExit(2)


def _operator(work: Callable[[], T]) -> T:
    """An operator command: like ``_fail_cleanly``, and any other error is one line and exit 2 too."""
    try:
        return _fail_cleanly(work)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        print(f"pgplane: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    _fail_cleanly(lambda: uvloop.run(runner()))


def cmd_api(settings: Settings, _: argparse.Namespace, faults: Faults) -> None:
    import uvicorn

    from api.http_protocol import JsonErrorsHttpToolsProtocol
    from entrypoints import control_plane
    from entrypoints.processes import api as api_process

    _fail_cleanly(lambda: uvloop.run(control_plane.check_metadata(settings)))
    app = api_process.api(settings, faults=faults)
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        loop="uvloop",
        http=JsonErrorsHttpToolsProtocol,
        timeout_keep_alive=settings.api_keep_alive_seconds,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,  # event streams never end by themselves
    )


def cmd_agent(settings: Settings, args: argparse.Namespace, faults: Faults) -> None:
    from entrypoints.processes import agent as agent_process

    if args.host:
        settings = settings.model_copy(update={"host_id": args.host})
    _run_until_signal(lambda stop: agent_process.run_agent(settings, stop, faults=faults))


def cmd_projector(settings: Settings, _: argparse.Namespace, faults: Faults) -> None:
    from entrypoints.processes import projector as projector_process

    _run_until_signal(lambda stop: projector_process.run_projector(settings, stop))


def cmd_webhooks(settings: Settings, _: argparse.Namespace, faults: Faults) -> None:
    from entrypoints.processes import webhooks as webhooks_process

    _run_until_signal(lambda stop: webhooks_process.run_webhooks(settings, stop, faults=faults))


def cmd_scheduler(settings: Settings, _: argparse.Namespace, faults: Faults) -> None:
    from entrypoints.processes import scheduler as scheduler_process

    _run_until_signal(lambda stop: scheduler_process.run_scheduler(settings, stop))


def cmd_replay(settings: Settings, args: argparse.Namespace, _: Faults) -> None:
    from entrypoints import operator

    if args.from_sequence is not None or args.since is not None:
        since = datetime.fromisoformat(args.since) if args.since else None
        done = _operator(
            lambda: uvloop.run(operator.reproject(settings, from_sequence=args.from_sequence, since=since))
        )
        print(json.dumps(asdict(done), indent=2))
        return
    report = _operator(lambda: uvloop.run(operator.replay(settings, keep=args.keep)))
    print(json.dumps(asdict(report) | {"matches": report.matches}, indent=2))
    sys.exit(0 if report.matches else 1)


def cmd_ops(settings: Settings, args: argparse.Namespace, _: Faults) -> None:
    from api.models import WebhookReplay
    from entrypoints.ops import Ops, run_ops

    stuck_after = timedelta(seconds=getattr(args, "older_than", 3600))

    async def act(ops: Ops) -> object:
        if args.what == "status":
            return await ops.status(stuck_after=stuck_after)
        if args.what == "drifts":
            return await ops.drifts(everything=args.all)
        if args.what == "platform-admin":
            return await ops.platform_admin(args.email, grant=args.action == "grant")
        if args.what == "webhook-replay":
            request = WebhookReplay(after=args.after, since=args.since, until=args.until)
            return await ops.replay_to_webhook(_uuid(args, "the endpoint's id"), request)
        if args.what == "stuck":
            if args.action == "retry":
                return await ops.retry(_uuid(args, "the operation's id (from pgplane ops stuck)"))
            if args.action == "fail":
                return await ops.fail(_uuid(args, "the operation's id (from pgplane ops stuck)"), args.reason)
            return await ops.stuck(older_than=stuck_after)
        if args.action == "show":
            return await ops.dead_letter(_sequence(args))
        if args.action == "redrive":
            return await ops.redrive_dead_letter(_sequence(args))
        if args.action == "discard":
            await ops.discard_dead_letter(_sequence(args))
            return {"discarded": _sequence(args)}
        return await ops.dead_letters()

    print(json.dumps(_operator(lambda: uvloop.run(run_ops(settings, act))), indent=2, default=str))


def _sequence(args: argparse.Namespace) -> int:
    if args.target is None or not args.target.isdigit():
        raise SystemExit("give the dead letter's sequence (from pgplane ops dead-letters list)")
    return int(args.target)


def _uuid(args: argparse.Namespace, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(args.target)
    except (TypeError, ValueError):
        raise SystemExit(f"give {what}") from None


def cmd_migrate(settings: Settings, args: argparse.Namespace, _: Faults) -> None:
    from entrypoints import operator
    from infra.metadata.migrate import head

    for target in args.targets:
        if target == "metadata":
            revision = _operator(lambda: operator.migrate_metadata(settings))
            print(f"metadata database: revision {revision or 'none'} -> {head()}")
        elif target == "ledger":
            before, after = _operator(lambda: uvloop.run(operator.migrate_ledger(settings)))
            print(f"agent ledger: version {before} -> {after}")
        else:
            made = _operator(lambda: uvloop.run(operator.setup_bus(settings)))
            print(f"bus: streams and consumers in place: {', '.join(made)}")


def cmd_schemas(_: Settings, args: argparse.Namespace, __: Faults) -> None:
    from schemas.asyncapi import write_specification
    from schemas.export import json_schemas, public_json_schemas, write_json_schemas

    if args.action == "export-asyncapi":
        print(write_specification(Path(args.directory)))
        return
    schemas = public_json_schemas() if args.action == "export-public" else json_schemas()
    for path in write_json_schemas(Path(args.directory), schemas):
        print(path)


def cmd_dev(settings: Settings, _: argparse.Namespace, __: Faults) -> None:
    """The whole platform on the embedded default (from a checkout: the dev stack is not installed)."""
    try:
        from devstack.supervisor import run_dev
    except ImportError:
        raise SystemExit("pgplane dev runs from a checkout of pgplane (the dev stack is not installed)") from None
    run_dev(settings)


OPERATOR_COMMANDS = {"migrate", "replay", "ops"}


def settings_for(command: str) -> Settings:
    """Processes read their environment; operator commands also the local stack's ``pgplane.env``."""
    settings = Settings()
    env_file = settings.state_dir / OPERATOR_ENV
    if command in OPERATOR_COMMANDS and env_file.exists():
        return Settings(_env_file=env_file)
    return settings


def add_ops_commands(ops: Any) -> None:
    older_than = argparse.ArgumentParser(add_help=False)
    older_than.add_argument(
        "--older-than", type=float, default=3600, help="seconds after which a running operation is stuck (3600)"
    )
    ops.add_parser("status", parents=[older_than], help="streams, durables, lag, dead letters, stuck, drifts")
    letters = ops.add_parser("dead-letters", help="list, show, redrive or discard dead letters")
    letters.add_argument("action", nargs="?", choices=["list", "show", "redrive", "discard"], default="list")
    letters.add_argument("target", nargs="?", help="the dead letter's sequence (show, redrive, discard)")
    stuck = ops.add_parser("stuck", parents=[older_than], help="list, retry or fail stuck operations")
    stuck.add_argument("action", nargs="?", choices=["list", "retry", "fail"], default="list")
    stuck.add_argument("target", nargs="?", help="the operation's id (retry, fail)")
    stuck.add_argument("--reason", default="stuck", help="why an operator fails it (fail)")
    drifts = ops.add_parser("drifts", help="differences the reconciler found between data hosts and the read model")
    drifts.add_argument("--all", action="store_true", help="repaired and resolved ones too")
    admins = ops.add_parser("platform-admin", help="make a user a platform administrator, or no longer one")
    admins.add_argument("action", choices=["grant", "revoke"])
    admins.add_argument("email")
    replay = ops.add_parser("webhook-replay", help="a project's events again to one webhook endpoint")
    replay.add_argument("target", help="the endpoint's id")
    replay.add_argument("--after", type=int, help="the project's events after this event number")
    replay.add_argument("--since", help="events from this time (ISO 8601 with its offset)")
    replay.add_argument("--until", help="... up to this time")


def main(argv: list[str] | None = None, *, faults: Faults = NO_FAULTS) -> None:
    parser = argparse.ArgumentParser(prog="pgplane")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="the REST API").set_defaults(func=cmd_api)
    agent = sub.add_parser("agent", help="the data-host agent")
    agent.add_argument("--host", help="data host id (default PGPLANE_HOST_ID)")
    agent.set_defaults(func=cmd_agent)
    sub.add_parser("projector", help="events → metadata read model and audit log").set_defaults(func=cmd_projector)
    sub.add_parser("webhooks", help="public events → webhook endpoints").set_defaults(func=cmd_webhooks)
    sub.add_parser("scheduler", help="scheduled backups, missed slots, retention").set_defaults(func=cmd_scheduler)
    sub.add_parser("dev", help="the whole platform locally").set_defaults(func=cmd_dev)
    migrate = sub.add_parser("migrate", help="bring databases to this release's schema")
    migrate.add_argument("targets", nargs="+", choices=["metadata", "ledger", "bus"])
    migrate.set_defaults(func=cmd_migrate)
    replay = sub.add_parser("replay", help="operator replays")
    replay.add_argument("what", choices=["projection"])
    replay.add_argument("--keep", action="store_true", help="keep the replayed schema")
    again = replay.add_mutually_exclusive_group()
    again.add_argument(
        "--from-sequence", type=int, help="apply the events from this stream sequence to the live read model again"
    )
    again.add_argument("--since", help="... from the first event at this time (ISO 8601 with its offset)")
    replay.set_defaults(func=cmd_replay)
    ops = sub.add_parser("ops", help="operator tools: status, dead letters, stuck operations, drifts, replays")
    ops.set_defaults(func=cmd_ops)
    add_ops_commands(ops.add_subparsers(dest="what", required=True))
    schemas = sub.add_parser("schemas", help="message contract")
    schemas.add_argument("action", choices=["export", "export-public", "export-asyncapi"])
    schemas.add_argument("directory")
    schemas.set_defaults(func=cmd_schemas)
    args = parser.parse_args(argv)
    logs.configure(os.environ.get("PGPLANE_LOG_FORMAT", "text" if args.command == "dev" else "json"))
    args.func(settings_for(args.command), args, faults)


if __name__ == "__main__":
    main()

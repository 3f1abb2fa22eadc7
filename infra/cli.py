"""``pgplane``: run one process of the platform, or the whole platform locally."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any

from infra.settings import Settings


def _run_until_signal(main: Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]], settings: Settings) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(settings, stop)

    asyncio.run(runner())


def cmd_api(settings: Settings, _: argparse.Namespace) -> None:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning")


def cmd_agent(settings: Settings, args: argparse.Namespace) -> None:
    from consumers.agent.service import run_agent

    if args.host:
        settings = settings.model_copy(update={"host_id": args.host})
    _run_until_signal(run_agent, settings)


def cmd_projector(settings: Settings, _: argparse.Namespace) -> None:
    from consumers.projector.service import run_projector

    _run_until_signal(run_projector, settings)


def cmd_scheduler(settings: Settings, _: argparse.Namespace) -> None:
    from producers.scheduler import run_scheduler

    _run_until_signal(run_scheduler, settings)


def cmd_replay(settings: Settings, args: argparse.Namespace) -> None:
    from consumers.projector.replay import replay_projection

    report = asyncio.run(replay_projection(settings, keep=args.keep))
    print(json.dumps(asdict(report) | {"matches": report.matches}, indent=2))
    sys.exit(0 if report.matches else 1)


def cmd_schemas(_: Settings, args: argparse.Namespace) -> None:
    from schemas.export import write_json_schemas

    for path in write_json_schemas(Path(args.directory)):
        print(path)


def cmd_dev(settings: Settings, _: argparse.Namespace) -> None:
    """The whole platform on the embedded default, until Ctrl-C."""
    from infra.supervisor import Cluster, Stack, free_port, port_is_free

    state = settings.state_dir.resolve()
    cluster = Cluster(state)
    port = settings.api_port
    if "PGPLANE_API_PORT" not in os.environ and not port_is_free(port):
        port = free_port()
    stack = Stack(cluster, state, api_port=port, host_id=settings.host_id)
    try:
        cluster.start()
        stack.start()
        print(f"pgplane is up.\n  API:         {stack.api_url}/api/v1  (docs: {stack.api_url}/api/docs)")
        print(f"  admin token: {stack.admin_token}\n  state:       {state}\nCtrl-C stops everything.", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        stack.stop()
        cluster.stop()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="pgplane")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="the REST API").set_defaults(func=cmd_api)
    agent = sub.add_parser("agent", help="the data-host agent")
    agent.add_argument("--host", help="data host id (default PGPLANE_HOST_ID)")
    agent.set_defaults(func=cmd_agent)
    sub.add_parser("projector", help="events → metadata read model and audit log").set_defaults(func=cmd_projector)
    sub.add_parser("scheduler", help="scheduled backups, missed slots, retention").set_defaults(func=cmd_scheduler)
    sub.add_parser("dev", help="the whole platform locally").set_defaults(func=cmd_dev)
    replay = sub.add_parser("replay", help="operator replays")
    replay.add_argument("what", choices=["projection"])
    replay.add_argument("--keep", action="store_true", help="keep the replayed schema")
    replay.set_defaults(func=cmd_replay)
    schemas = sub.add_parser("schemas", help="message contract")
    schemas.add_argument("action", choices=["export"])
    schemas.add_argument("directory")
    schemas.set_defaults(func=cmd_schemas)
    args = parser.parse_args(argv)
    args.func(Settings(), args)


if __name__ == "__main__":
    main()

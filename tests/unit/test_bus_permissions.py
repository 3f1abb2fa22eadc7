"""The production ``nats.conf`` grants exactly the permissions the code needs (``infra.bus_permissions``),
and the real ``nats-server`` accepts it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from infra import bus_permissions
from schemas.subjects import Subjects

NATS_CONF = Path(__file__).resolve().parents[2] / "nats.conf"


def granted() -> dict[str, tuple[list[str], list[str], bool]]:
    """user → (publish, subscribe, may answer requests) as nats.conf lists them."""
    text = NATS_CONF.read_text()
    found = {}
    for user, publish, subscribe, answers in re.findall(
        r'\{user: "([^"]+)".*?publish: \{allow: (\[[^\]]*\])\},\s*subscribe: \{allow: (\[[^\]]*\])\}'
        r"(,\s*allow_responses: true)?",
        text,
        re.S,
    ):
        found[user] = (json.loads(publish), json.loads(subscribe), bool(answers))
    return found


def test_nats_conf_grants_what_each_role_needs_and_no_more() -> None:
    roles = bus_permissions.roles(Subjects(namespace="pgplane"), ["host-1"])
    assert granted() == {role.user: (role.publish, role.subscribe, role.answers_requests) for role in roles}


def test_only_the_api_and_the_scheduler_may_publish_commands() -> None:
    s = Subjects(namespace="pgplane")
    for role in bus_permissions.roles(s, ["host-1"]):
        publishes_commands = any(p.startswith("pgplane.cmd.") or p == ">" for p in role.publish)
        assert publishes_commands == (role.user in {"pgplane-api", "pgplane-scheduler", "pgplane-operator"}), role


def test_nats_server_accepts_nats_conf() -> None:
    passwords = {name: "x" for name in re.findall(r"\$(PGPLANE_NATS_\w+_PASSWORD)", NATS_CONF.read_text())}
    server = Path(sys.executable).parent / "nats-server"
    result = subprocess.run(
        [str(server), "-t", "-c", str(NATS_CONF)],
        env=os.environ | passwords | {"NATS_SERVER_NAME": "nats-1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr

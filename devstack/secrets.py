"""The dev stack's own credentials: generated once per state directory, kept 0600, reused on
every restart so saved connection strings and tokens keep working."""

from __future__ import annotations

import json
import os
from pathlib import Path

from infra.backup_crypto import new_backup_key_spec
from infra.secrets import new_host_key, new_password, new_secret_key
from infra.signing import new_signing_key


def load_secrets(path: Path) -> dict[str, str]:
    """Generated once per state directory and reused, so a restart keeps every credential."""
    if path.exists():
        saved: dict[str, str] = json.loads(path.read_text())
    else:
        private, public = new_host_key()
        saved = {
            "superuser_password": new_password(),
            "control_password": new_password(),
            "pgbouncer_admin_password": new_password(),
            "secret_key": new_secret_key(),
            "host_private_key": private,
            "host_public_key": public,
            "admin_token": "pgpadmin_" + new_password(40),
        }
    if "backup_keys" not in saved:  # state made before backups existed
        saved["backup_keys"] = new_backup_key_spec("k1")
    if "nats_admin_password" not in saved:  # state made before NATS had users
        saved["nats_admin_password"] = new_password()
    if "command_signing_key" not in saved:  # state made before commands were signed
        saved["command_signing_key"], saved["command_verify_keys"] = new_signing_key("s1")
    path.touch(mode=0o600)
    path.write_text(json.dumps(saved, indent=2))
    if token := os.environ.get("PGPLANE_ADMIN_TOKEN"):
        saved["admin_token"] = token
    return saved

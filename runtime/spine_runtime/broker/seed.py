"""Seed Mosquitto's dynamic-security file with the admin login before the broker starts.

Runs as the broker pod's init container (`spine-runtime broker-seed`) and before a local broker
starts. On first start it writes the file `mosquitto_ctrl dynsec init` would write; on later
starts it keeps every client and role the operator created and only makes sure the admin login
exists with the current password, so rotating the admin Secret (which rolls the pod) works.
Password hashes are PBKDF2-HMAC-SHA512, as the plugin stores them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

ADMIN_ROLE = "admin"
HASH_ITERATIONS = 1000
CONTROL_TOPIC = "$CONTROL/dynamic-security/#"

# The admin role as `mosquitto_ctrl dynsec init` creates it: administer the plugin, and observe
# every topic (subscribe and receive, never publish outside $CONTROL).
ADMIN_ACLS = [
    {"acltype": "publishClientSend", "topic": CONTROL_TOPIC, "allow": True},
    {"acltype": "publishClientReceive", "topic": CONTROL_TOPIC, "allow": True},
    {"acltype": "subscribePattern", "topic": CONTROL_TOPIC, "allow": True},
    {"acltype": "publishClientReceive", "topic": "$SYS/#", "allow": True},
    {"acltype": "subscribePattern", "topic": "$SYS/#", "allow": True},
    {"acltype": "publishClientReceive", "topic": "#", "allow": True},
    {"acltype": "subscribePattern", "topic": "#", "allow": True},
    {"acltype": "unsubscribePattern", "topic": "#", "allow": True},
]

# Deny by default: a client may only publish or subscribe where one of its roles allows it.
DEFAULT_ACL_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": True,
    "subscribe": False,
    "unsubscribe": True,
}


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = HASH_ITERATIONS
) -> dict:
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def password_matches(client: dict[str, Any], password: str) -> bool:
    try:
        salt = base64.b64decode(client["salt"])
        expected = base64.b64decode(client["password"])
        iterations = int(client["iterations"])
    except (KeyError, ValueError, TypeError):
        return False
    actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(actual, expected)


def seeded_document(current: dict[str, Any] | None, username: str, password: str) -> dict[str, Any]:
    """The dynamic-security document with the admin login in place; other entries untouched."""
    document = dict(current or {})
    clients = [dict(client) for client in document.get("clients", [])]
    roles = [dict(role) for role in document.get("roles", [])]
    document.setdefault("defaultACLAccess", DEFAULT_ACL_ACCESS)

    admin_role = next((role for role in roles if role.get("rolename") == ADMIN_ROLE), None)
    if admin_role is None:
        roles.append({"rolename": ADMIN_ROLE, "acls": ADMIN_ACLS})
    else:
        present = {(acl.get("acltype"), acl.get("topic")) for acl in admin_role.get("acls", [])}
        admin_role["acls"] = list(admin_role.get("acls", [])) + [
            acl for acl in ADMIN_ACLS if (acl["acltype"], acl["topic"]) not in present
        ]

    admin = next((client for client in clients if client.get("username") == username), None)
    if admin is None:
        admin = {"username": username, "textName": "Spine operator (broker admin)", "roles": []}
        clients.append(admin)
    if not password_matches(admin, password):
        admin.update(hash_password(password))
    if not any(role.get("rolename") == ADMIN_ROLE for role in admin.get("roles", [])):
        admin["roles"] = [*admin.get("roles", []), {"rolename": ADMIN_ROLE}]
    admin.pop("disabled", None)

    document["clients"] = clients
    document["roles"] = roles
    return document


def seed_file(path: Path, username: str, password: str) -> str:
    """Create or update `path`; returns "created", "updated" or "unchanged"."""
    current = json.loads(path.read_text()) if path.exists() else None
    document = seeded_document(current, username, password)
    if document == current:
        return "unchanged"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1))
    os.chmod(temporary, 0o600)
    temporary.replace(path)
    return "created" if current is None else "updated"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spine-runtime broker-seed", description=__doc__)
    parser.add_argument("--file", required=True, type=Path, help="dynamic-security JSON file")
    parser.add_argument("--username-file", required=True, type=Path)
    parser.add_argument("--password-file", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        username = args.username_file.read_text().strip()
        password = args.password_file.read_text().strip()
    except OSError as error:
        print(f"broker-seed: cannot read the admin credentials: {error}", file=sys.stderr)
        return 1
    if not username or not password:
        print("broker-seed: the admin username and password must not be empty", file=sys.stderr)
        return 1
    result = seed_file(args.file, username, password)
    print(f"broker-seed: {args.file} {result}")
    return 0

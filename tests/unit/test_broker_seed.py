"""The dynamic-security seed: the admin login in place, everything else the operator made kept."""

import json

from spine_runtime.broker.seed import main, password_matches, seed_file, seeded_document


def test_first_seed_matches_mosquitto_ctrl_init_shape(tmp_path) -> None:
    path = tmp_path / "dynsec.json"
    assert seed_file(path, "admin", "pw1") == "created"
    document = json.loads(path.read_text())
    admin = document["clients"][0]
    assert admin["username"] == "admin" and password_matches(admin, "pw1")
    assert not password_matches(admin, "pw2")
    assert document["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": True,
        "subscribe": False,
        "unsubscribe": True,
    }
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_reseed_keeps_other_logins_and_rotates_the_admin_password(tmp_path) -> None:
    path = tmp_path / "dynsec.json"
    seed_file(path, "admin", "pw1")
    document = json.loads(path.read_text())
    document["clients"].append({"username": "gw", "roles": [{"rolename": "spine-gw"}]})
    document["roles"].append({"rolename": "spine-gw", "acls": []})
    path.write_text(json.dumps(document))
    assert seed_file(path, "admin", "pw1") == "unchanged"
    assert seed_file(path, "admin", "pw2") == "updated"
    after = json.loads(path.read_text())
    assert {c["username"] for c in after["clients"]} == {"admin", "gw"}
    assert password_matches(after["clients"][0], "pw2")


def test_admin_role_acls_are_restored_if_removed() -> None:
    document = seeded_document(None, "admin", "pw")
    document["roles"][0]["acls"] = []
    repaired = seeded_document(document, "admin", "pw")
    assert len(repaired["roles"][0]["acls"]) == 8


def test_cli_refuses_empty_credentials(tmp_path, capsys) -> None:
    (tmp_path / "u").write_text("admin")
    (tmp_path / "p").write_text("\n")
    code = main(
        [
            "--file",
            str(tmp_path / "d.json"),
            "--username-file",
            str(tmp_path / "u"),
            "--password-file",
            str(tmp_path / "p"),
        ]
    )
    assert code == 1 and "must not be empty" in capsys.readouterr().err
    assert not (tmp_path / "d.json").exists()

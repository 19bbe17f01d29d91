"""``swapmeet init`` and ``swapmeet id``, run as real processes with no stdin (as in CI).

Encrypted keys made by ``init`` use the real argon2id cost (~0.4 s per seal or
open), so only one test does that; the others write a key sealed with the
fastest limits directly (the limits are stored in the file, so ``id`` opens it
the same way).
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from swapmeet.protocol import keyfile
from swapmeet.protocol.identity import Identity, peer_id

from tests.cli_helpers import assert_one_line_error, clean_env, run_cli


def write_fast_encrypted_key(home: Path, passphrase: str) -> Identity:
    identity = Identity.generate()
    home.mkdir(mode=0o700, exist_ok=True)
    key = home / "identity.key"
    key.write_bytes(
        keyfile.seal_seed(identity.seed, passphrase, opslimit=keyfile.FAST_OPSLIMIT, memlimit=keyfile.FAST_MEMLIMIT)
    )
    key.chmod(0o600)
    return identity


def id_json(*args: str, env: dict[str, str] | None = None) -> dict:
    proc = run(*args, "id", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_init_without_passphrase_then_id(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = run("--home", str(home), "init", "--no-passphrase")
    assert proc.returncode == 0, proc.stderr

    key = home / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert [p.name for p in home.iterdir()] == ["identity.key"]  # no temp file left behind

    info = id_json("--home", str(home))
    assert set(info) == {"peer_id", "public_key", "addrs"}
    assert info["peer_id"].startswith("12D3KooW")
    assert len(info["public_key"]) == 64
    assert peer_id(bytes.fromhex(info["public_key"])) == info["peer_id"]
    assert info["addrs"] == []
    assert info["peer_id"] in proc.stdout

    text = run("--home", str(home), "id")
    assert text.returncode == 0
    assert info["peer_id"] in text.stdout and info["public_key"] in text.stdout


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert run("--home", str(tmp_path), "init", "--no-passphrase").returncode == 0
    key = tmp_path / "identity.key"
    before = key.read_bytes()
    proc = run("--home", str(tmp_path), "init", "--no-passphrase")
    assert_one_line_error(proc, 1, "already exists", str(key))
    assert key.read_bytes() == before
    # also with a passphrase source: refused before any work is done
    proc = run("--home", str(tmp_path), "init", env={"SWAPMEET_PASSPHRASE": "pw"})
    assert_one_line_error(proc, 1, "already exists")
    assert key.read_bytes() == before


def test_passphrase_from_environment(tmp_path: Path) -> None:
    """The one test with the real argon2id cost: init, id, id with a wrong passphrase."""
    proc = run("--home", str(tmp_path), "init", env={"SWAPMEET_PASSPHRASE": "s3cret pass"})
    assert proc.returncode == 0, proc.stderr
    key = tmp_path / "identity.key"
    before = key.read_bytes()
    assert keyfile.is_encrypted(before)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    info = id_json("--home", str(tmp_path), env={"SWAPMEET_PASSPHRASE": "s3cret pass"})
    assert info["peer_id"] in proc.stdout

    wrong = run("--home", str(tmp_path), "id", env={"SWAPMEET_PASSPHRASE": "guess"})
    assert_one_line_error(wrong, 2, "wrong passphrase", str(key))
    assert key.read_bytes() == before


def test_wrong_passphrase(tmp_path: Path) -> None:
    identity = write_fast_encrypted_key(tmp_path, "right")
    before = (tmp_path / "identity.key").read_bytes()
    proc = run("--home", str(tmp_path), "id", env={"SWAPMEET_PASSPHRASE": "wrong"})
    assert_one_line_error(proc, 2, "wrong passphrase")
    assert (tmp_path / "identity.key").read_bytes() == before
    info = id_json("--home", str(tmp_path), env={"SWAPMEET_PASSPHRASE": "right"})
    assert info["peer_id"] == identity.peer_id


def test_encrypted_key_without_passphrase_or_terminal(tmp_path: Path) -> None:
    write_fast_encrypted_key(tmp_path, "pw")
    proc = run("--home", str(tmp_path), "id")
    assert_one_line_error(proc, 2, "SWAPMEET_PASSPHRASE", "no terminal")


def test_init_without_passphrase_source_or_terminal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = run("--home", str(home), "init")
    assert_one_line_error(proc, 2, "SWAPMEET_PASSPHRASE", "--no-passphrase")
    assert not (home / "identity.key").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[: len(blob) // 2],
        lambda blob: b"",
        lambda blob: b"not a key file at all\n",
        lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]),
    ],
    ids=["truncated", "empty", "garbage", "bit-flip"],
)
def test_damaged_key_file(tmp_path: Path, damage) -> None:
    assert run("--home", str(tmp_path), "init", "--no-passphrase").returncode == 0
    key = tmp_path / "identity.key"
    key.write_bytes(damage(key.read_bytes()))
    before = key.read_bytes()
    proc = run("--home", str(tmp_path), "id")
    assert_one_line_error(proc, 2, "damaged", str(key))
    assert key.read_bytes() == before


def test_id_without_identity_says_to_run_init(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    proc = run("--home", str(home), "id")
    assert_one_line_error(proc, 2, "swapmeet init", str(home / "identity.key"))
    assert not home.exists()  # reading never creates anything


def test_swapmeet_home_environment_variable(tmp_path: Path) -> None:
    env = {"SWAPMEET_HOME": str(tmp_path / "from-env")}
    assert run("init", "--no-passphrase", env=env).returncode == 0
    assert (tmp_path / "from-env" / "identity.key").exists()
    assert id_json(env=env)["peer_id"].startswith("12D3KooW")


def test_home_option_wins_over_environment(tmp_path: Path) -> None:
    env = {"SWAPMEET_HOME": str(tmp_path / "from-env")}
    assert run("--home", str(tmp_path / "from-option"), "init", "--no-passphrase", env=env).returncode == 0
    assert (tmp_path / "from-option" / "identity.key").exists()
    assert not (tmp_path / "from-env").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_DATA_HOME is the Linux convention")
def test_default_home_is_the_platform_data_dir(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert run("init", "--no-passphrase", env=env).returncode == 0
    assert (tmp_path / "xdg" / "swapmeet" / "identity.key").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run("--debug", "--home", str(tmp_path), "id")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "NoIdentityError" in proc.stderr


def test_version_and_usage_errors() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("swapmeet, version ")
    assert run("no-such-command").returncode == 2


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "swapmeet"
    if not script.exists():
        pytest.skip("the swapmeet console script is not installed next to this python")
    proc = subprocess.run(
        [str(script), "--home", str(tmp_path), "init", "--no-passphrase"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "identity.key").exists()


def test_cli_import_stays_light() -> None:
    """The CLI must start fast: no libp2p or rich at import time."""
    code = (
        "import sys, swapmeet.cli.main; "
        "heavy = sorted(m for m in ('libp2p', 'rich', 'trio', 'multiaddr') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_init_json(tmp_path: Path) -> None:
    proc = run("--home", str(tmp_path / "home"), "init", "--no-passphrase", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert set(info) == {"peer_id", "public_key", "key_file", "encrypted"}
    assert info["encrypted"] is False and info["key_file"] == str(tmp_path / "home" / "identity.key")
    assert peer_id(bytes.fromhex(info["public_key"])) == info["peer_id"]


def run(*args: str, env: dict[str, str] | None = None):
    return run_cli(*args, env=clean_env(**(env or {})))

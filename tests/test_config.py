"""The node configuration: layers, provenance, bad input, and the ``config`` / ``completion`` commands.

Precedence is checked in-process (:func:`swapmeet.node.config.load_config` with
an explicit environment); what a user sees (one line, exit 2) is checked by
running the CLI as a user does, in subprocesses with no stdin and no
``SWAPMEET_*`` variables from the test runner's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from swapmeet.node.config import KEYS, ConfigError, load_config
from swapmeet.node.home import Home
from swapmeet.protocol.identity import peer_id

from tests.cli_helpers import CLI, clean_env, run_cli

PEER_A = peer_id(bytes(range(32)))
PEER_B = peer_id(bytes(range(1, 33)))


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence, for every key ---

# key -> (TOML line, its value), (env text, its value), (flag value, its value)
LAYERS: dict[str, tuple[tuple[str, Any], tuple[str, Any], tuple[Any, Any]]] = {
    "listen": (
        ('listen = ["/ip4/127.0.0.1/tcp/1"]', ("/ip4/127.0.0.1/tcp/1",)),
        (" /ip4/127.0.0.1/tcp/2 , /ip6/::1/tcp/2", ("/ip4/127.0.0.1/tcp/2", "/ip6/::1/tcp/2")),
        (("/ip4/127.0.0.1/tcp/3",), ("/ip4/127.0.0.1/tcp/3",)),
    ),
    "bootstrap": (
        (
            f'bootstrap = ["/dns4/peer.example.org/tcp/4001/p2p/{PEER_A}"]',
            (f"/dns4/peer.example.org/tcp/4001/p2p/{PEER_A}",),
        ),
        (
            f"/ip4/192.0.2.1/tcp/1/p2p/{PEER_A},/ip6/2001:db8::1/tcp/2/p2p/{PEER_B}",
            (f"/ip4/192.0.2.1/tcp/1/p2p/{PEER_A}", f"/ip6/2001:db8::1/tcp/2/p2p/{PEER_B}"),
        ),
        ((f"/dnsaddr/example.org/p2p/{PEER_B}",), (f"/dnsaddr/example.org/p2p/{PEER_B}",)),
    ),
    "net": (('net = "from-file"', "from-file"), ("from-env", "from-env"), ("from-flag", "from-flag")),
    "api_port": (("api_port = 1111", 1111), ("2222", 2222), (3333, 3333)),
    "mdns": (("mdns = false", False), ("yes", True), (False, False)),
    "dht": (("dht = false", False), ("1", True), (False, False)),
    "relay_service": (("relay_service = false", False), ("true", True), (False, False)),
    "archive": (("archive = true", True), ("no", False), (True, True)),
    "follow": (
        (f'follow = ["{PEER_A}"]', (PEER_A,)),
        (f"{PEER_A}, {PEER_B}", (PEER_A, PEER_B)),
        ((PEER_B,), (PEER_B,)),
    ),
}
DEFAULTS = {
    "listen": ("/ip4/0.0.0.0/tcp/4001",),
    "bootstrap": (),
    "net": "main",
    "api_port": 0,
    "mdns": True,
    "dht": True,
    "relay_service": True,
    "archive": False,
    "follow": (),
}
FLAG_NAMES = {
    "listen": "--listen",
    "bootstrap": "--bootstrap",
    "net": "--net",
    "api_port": "--api-port",
    "follow": "--follow",
}


def test_every_key_is_covered() -> None:
    assert set(LAYERS) == set(KEYS) == set(DEFAULTS)


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(Home(tmp_path / "none"), env={}, flags={})
    for key in KEYS:
        assert getattr(cfg, key) == DEFAULTS[key]
        assert cfg.sources[key] == "default"
    assert cfg.file == str(tmp_path / "none" / "config.toml")


@pytest.mark.parametrize("key", list(LAYERS))
def test_each_layer_overrides_the_one_below(tmp_path: Path, key: str) -> None:
    (toml, file_value), (env_text, env_value), (flag, flag_value) = LAYERS[key]
    home = Home(tmp_path)
    env_var = f"SWAPMEET_{key.upper()}"
    flag_name = FLAG_NAMES.get(key) or (f"--{key}" if flag else f"--no-{key}").replace("_", "-")
    others = [k for k in KEYS if k != key]

    cfg = load_config(home, env={env_var: env_text}, flags={key: flag})  # no file: env, then flag
    assert (getattr(cfg, key), cfg.sources[key]) == (flag_value, f"flag {flag_name}")
    cfg = load_config(home, env={env_var: env_text})
    assert (getattr(cfg, key), cfg.sources[key]) == (env_value, f"env {env_var}")

    path = write_config(tmp_path, toml + "\n")
    cfg = load_config(home, env={})
    assert (getattr(cfg, key), cfg.sources[key]) == (file_value, str(path))
    assert all(cfg.sources[k] == "default" and getattr(cfg, k) == DEFAULTS[k] for k in others)
    cfg = load_config(home, env={env_var: env_text})
    assert (getattr(cfg, key), cfg.sources[key]) == (env_value, f"env {env_var}")
    cfg = load_config(home, env={env_var: env_text}, flags={key: flag})
    assert (getattr(cfg, key), cfg.sources[key]) == (flag_value, f"flag {flag_name}")
    cfg = load_config(home, env={}, flags={key: flag})  # a flag over the file, no env
    assert (getattr(cfg, key), cfg.sources[key]) == (flag_value, f"flag {flag_name}")

    # an empty variable, a flag not given (None, or () for a repeatable option) are "not set"
    cfg = load_config(home, env={env_var: ""}, flags={key: () if isinstance(flag, tuple) else None})
    assert (getattr(cfg, key), cfg.sources[key]) == (file_value, str(path))


def test_all_layers_at_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'net = "file-net"\napi_port = 1\nmdns = false\n')
    cfg = load_config(
        Home(tmp_path),
        env={"SWAPMEET_API_PORT": "2", "SWAPMEET_MDNS": "no", "SWAPMEET_HOME": "/elsewhere"},
        flags={"mdns": True, "listen": (), "bootstrap": (), "net": None, "api_port": None, "dht": None},
    )
    assert cfg.to_json() == {
        "listen": {"value": ["/ip4/0.0.0.0/tcp/4001"], "source": "default"},
        "bootstrap": {"value": [], "source": "default"},
        "net": {"value": "file-net", "source": str(path)},
        "api_port": {"value": 2, "source": "env SWAPMEET_API_PORT"},
        "mdns": {"value": True, "source": "flag --mdns"},
        "dht": {"value": True, "source": "default"},
        "relay_service": {"value": True, "source": "default"},
        "archive": {"value": False, "source": "default"},
        "follow": {"value": [], "source": "default"},
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True)],
        *[(" no ", False), ("false", False), ("0", False), ("NO", False)],
    ],
)
def test_boolean_spellings_in_the_environment(tmp_path: Path, text: str, value: bool) -> None:
    cfg = load_config(Home(tmp_path), env={"SWAPMEET_MDNS": text, "SWAPMEET_DHT": text})
    assert cfg.mdns is value and cfg.dht is value


def test_os_environ_is_the_default_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWAPMEET_NET", "from-os")
    assert load_config(Home(tmp_path)).sources["net"] == "env SWAPMEET_NET"


# --- bad input: one line that says what and where, exit 2 ---

BAD_FILES: list[tuple[str, str | bytes, list[str]]] = [
    ("syntax", "net = \n", ["not valid TOML", "line 1"]),
    ("syntax-2", 'listen = ["/ip4/127.0.0.1/tcp/1"\nnet = "x"\n', ["not valid TOML"]),
    ("not-utf8", b'net = "\xff"\n', ["not valid TOML", "UTF-8"]),
    ("unknown-key", "lsten = []\n", ["unknown key 'lsten'", "did you mean 'listen'"]),
    ("a-table", "[node]\nnet = 'x'\n", ["unknown key 'node'"]),
    ("net-type", "net = 5\n", ["key 'net'", "expected a string, got integer 5"]),
    ("net-name", 'net = "Bad Net!"\n', ["key 'net'", "invalid network name 'Bad Net!'"]),
    ("net-dot", 'net = "a.b"\n', ["key 'net'", "invalid network name 'a.b'"]),
    ("listen-type", 'listen = "/ip4/0.0.0.0/tcp/1"\n', ["key 'listen'", "expected an array of strings"]),
    ("listen-item", 'listen = ["/ip4/0.0.0.0/tcp/1", 7]\n', ["key 'listen'", "item 1", "integer 7"]),
    ("listen-empty", "listen = []\n", ["key 'listen'", "at least one address"]),
    ("listen-shape", 'listen = ["ip4/0.0.0.0/tcp/1"]\n', ["key 'listen'", "not a multiaddr"]),
    ("listen-ip", 'listen = ["/ip4/1.2.3/tcp/1"]\n', ["key 'listen'", "bad ip4 address '1.2.3'"]),
    ("listen-udp", 'listen = ["/ip4/0.0.0.0/udp/1"]\n', ["key 'listen'", "/ip4|ip6/<addr>/tcp/<port>"]),
    ("listen-port", 'listen = ["/ip6/::/tcp/65536"]\n', ["key 'listen'", "bad TCP port '65536'"]),
    ("bootstrap-no-p2p", 'bootstrap = ["/ip4/192.0.2.1/tcp/4001"]\n', ["key 'bootstrap'", "/p2p/<peer id>"]),
    ("bootstrap-peer", 'bootstrap = ["/ip4/192.0.2.1/tcp/4001/p2p/QmNope"]\n', ["key 'bootstrap'", "bad peer id"]),
    ("bootstrap-dns", f'bootstrap = ["/dns4/bad_host!/tcp/1/p2p/{PEER_A}"]\n', ["key 'bootstrap'", "bad DNS name"]),
    ("port-range", "api_port = 70000\n", ["key 'api_port'", "70000 out of range"]),
    ("port-negative", "api_port = -1\n", ["key 'api_port'", "out of range"]),
    ("port-type", 'api_port = "8080"\n', ["key 'api_port'", 'expected an integer, got string "8080"']),
    ("port-bool", "api_port = true\n", ["key 'api_port'", "expected an integer, got boolean true"]),
    ("mdns-type", 'mdns = "yes"\n', ["key 'mdns'", "expected true or false"]),
    ("dht-type", "dht = 1\n", ["key 'dht'", "expected true or false, got integer 1"]),
]

BAD_ENV: list[tuple[str, str, list[str]]] = [
    ("SWAPMEET_LISTEN", "/ip4/0.0.0.0/tcp/1,nope", ["not a multiaddr: 'nope'"]),
    ("SWAPMEET_BOOTSTRAP", "/ip4/192.0.2.1/tcp/1", ["/p2p/<peer id>"]),
    ("SWAPMEET_NET", "Main", ["invalid network name 'Main'"]),
    ("SWAPMEET_API_PORT", "http", ["expected an integer 0-65535, got 'http'"]),
    ("SWAPMEET_API_PORT", "65536", ["65536 out of range"]),
    ("SWAPMEET_MDNS", "maybe", ["expected true/false/1/0/yes/no, got 'maybe'"]),
    ("SWAPMEET_DHT", "on", ["expected true/false/1/0/yes/no, got 'on'"]),
]

BAD_FLAGS: list[tuple[list[str], list[str]]] = [
    (["--net", "Bad Net!"], ["--net: invalid network name 'Bad Net!'"]),
    (["--listen", "/ip4/0.0.0.0/tcp/1", "--listen", "/ip4/0.0.0.0/udp/1"], ["--listen:", "udp"]),
    (["--bootstrap", "/ip4/192.0.2.1/tcp/1/p2p/nope"], ["--bootstrap:", "bad peer id"]),
]


@pytest.mark.parametrize(("name", "text", "needles"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_names_file_and_key(tmp_path: Path, name: str, text: str | bytes, needles: list[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(Home(tmp_path), env={})
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(("var", "text", "needles"), BAD_ENV, ids=[f"{c[0]}={c[1]}" for c in BAD_ENV])
def test_bad_environment_names_the_variable(tmp_path: Path, var: str, text: str, needles: list[str]) -> None:
    write_config(tmp_path, 'net = "fine"\n')  # a valid file under it changes nothing
    with pytest.raises(ConfigError) as info:
        load_config(Home(tmp_path), env={var: text})
    message = str(info.value)
    assert message.startswith(f"environment variable {var}: ") and "\n" not in message
    for needle in needles:
        assert needle in message


def test_bad_flag_names_the_flag(tmp_path: Path) -> None:
    write_config(tmp_path, 'net = "fine"\n')
    env = {"SWAPMEET_NET": "also-fine"}
    with pytest.raises(ConfigError, match=r"^--api-port: port 70000 out of range"):
        load_config(Home(tmp_path), env=env, flags={"api_port": 70000})
    with pytest.raises(ConfigError, match=r"^--net: invalid network name 'x y'"):
        load_config(Home(tmp_path), env=env, flags={"net": "x y"})
    with pytest.raises(ConfigError, match=r"^--listen: not a multiaddr: 'x'"):
        load_config(Home(tmp_path), env=env, flags={"listen": ("/ip4/0.0.0.0/tcp/1", "x")})


def test_unreadable_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()
    with pytest.raises(ConfigError, match=r"^cannot read config file .*config\.toml: "):
        load_config(Home(tmp_path), env={})


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needles: list[str], label: str) -> None:
    assert proc.returncode == 2, (label, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", label
    assert "Traceback" not in proc.stderr, label
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("swapmeet: error: "), (label, proc.stderr)
    for needle in needles:
        assert needle in lines[0], (label, needle, lines[0])


@pytest.mark.slow
def test_every_bad_input_through_the_cli(tmp_path: Path) -> None:
    """Each case as a user meets it: exit 2, nothing on stdout, one line on stderr saying what and where.

    About 50 processes, a few at a time (each pays the interpreter start-up, ~0.3 s of CPU).
    """
    jobs: list[tuple[str, list[str], dict[str, str], list[str]]] = []
    for i, (name, text, needles) in enumerate(BAD_FILES):
        home = tmp_path / f"file-{name}"
        path = write_config(home, "")
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        args = ["config", "show", "--json"] if i % 8 == 0 else ["config", "show"]  # --json fails the same way
        jobs.append((f"{name} {args}", ["--home", str(home), *args], clean_env(), [str(path), *needles]))
    # the node refuses to start on the same input, before it looks for a key or a running node
    for name, _text, needles in (*BAD_FILES[:3], *BAD_FILES[6:8]):
        home = tmp_path / f"file-{name}"
        jobs.append((f"{name} node run", ["--home", str(home), "node", "run"], clean_env(), needles))
    for i, (var, text, needles) in enumerate(BAD_ENV):
        home = str(tmp_path / "env")
        for args in (["config", "show"], ["node", "run"])[: 2 if i % 3 == 0 else 1]:
            jobs.append((f"{var}={text} {args}", ["--home", home, *args], clean_env(**{var: text}), [var, *needles]))
    for flags, needles in BAD_FLAGS:
        jobs.append((" ".join(flags), ["--home", str(tmp_path / "flags"), "node", "run", *flags], clean_env(), needles))

    def call(job: tuple[str, list[str], dict[str, str], list[str]]) -> subprocess.CompletedProcess[str]:
        return run_cli(*job[1], env=job[2], timeout=120)

    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        results = list(pool.map(call, jobs))
    for (label, _argv, _env, needles), proc in zip(jobs, results, strict=True):
        assert_one_line_error(proc, needles, label)
    assert not (tmp_path / "env").exists() and not (tmp_path / "flags").exists()  # nothing was created


def test_api_port_flag_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    proc = run(tmp_path, "node", "run", "--api-port", "70000")
    assert proc.returncode == 2 and "--api-port" in proc.stderr and "Traceback" not in proc.stderr


# --- config show / config path ---


def test_config_show_table_and_json(tmp_path: Path) -> None:
    path = write_config(tmp_path, f'net = "co-op"\nbootstrap = ["/ip4/192.0.2.1/tcp/4001/p2p/{PEER_A}"]\n')
    env = clean_env(SWAPMEET_API_PORT="8123", SWAPMEET_DHT="false")
    proc = run(tmp_path, "config", "show", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == list(KEYS)
    assert rows["net"].split() == ["net", "co-op", str(path)]
    assert rows["api_port"].split() == ["api_port", "8123", "env", "SWAPMEET_API_PORT"]
    assert rows["dht"].split() == ["dht", "false", "env", "SWAPMEET_DHT"]
    assert rows["mdns"].split() == ["mdns", "true", "default"]
    assert rows["listen"].split() == ["listen", "/ip4/0.0.0.0/tcp/4001", "default"]
    # aligned: every SOURCE starts in the same column
    column = lines[0].index("SOURCE")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)

    proc = run(tmp_path, "config", "show", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown == {
        "listen": {"value": ["/ip4/0.0.0.0/tcp/4001"], "source": "default"},
        "bootstrap": {"value": [f"/ip4/192.0.2.1/tcp/4001/p2p/{PEER_A}"], "source": str(path)},
        "net": {"value": "co-op", "source": str(path)},
        "api_port": {"value": 8123, "source": "env SWAPMEET_API_PORT"},
        "mdns": {"value": True, "source": "default"},
        "dht": {"value": False, "source": "env SWAPMEET_DHT"},
        "relay_service": {"value": True, "source": "default"},
        "archive": {"value": False, "source": "default"},
        "follow": {"value": [], "source": "default"},
    }


def test_config_show_without_a_home_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "not-yet"
    proc = run(home, "config", "show", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {v["source"] for v in json.loads(proc.stdout).values()} == {"default"}
    assert not home.exists()


def test_config_path_follows_the_home(tmp_path: Path) -> None:
    proc = run(tmp_path / "h", "config", "path")
    assert proc.returncode == 0 and proc.stdout == f"{tmp_path / 'h' / 'config.toml'}\n"
    env = clean_env(SWAPMEET_HOME=str(tmp_path / "from-env"))
    proc = run_cli("config", "path", env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == str(tmp_path / "from-env" / "config.toml")


def test_node_run_help_names_the_layers(tmp_path: Path) -> None:
    proc = run(tmp_path, "node", "run", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for needle in ("4001", "SWAPMEET_LISTEN", "SWAPMEET_NET", "SWAPMEET_API_PORT", "--no-mdns", "--no-dht"):
        assert needle in text
    assert "config show" in text


# --- shell completion ---


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(tmp_path: Path, shell: str) -> None:
    proc = run(tmp_path, "completion", shell)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "_SWAPMEET_COMPLETE" in proc.stdout
    assert "swapmeet" in proc.stdout


def test_completion_help_and_bad_shell(tmp_path: Path) -> None:
    proc = run(tmp_path, "completion", "--help")
    assert proc.returncode == 0 and 'eval "$(swapmeet completion bash)"' in proc.stdout
    proc = run(tmp_path, "completion", "tcsh")
    assert proc.returncode == 2 and "tcsh" in proc.stderr


def test_completion_completes(tmp_path: Path) -> None:
    """The script's callback: what bash gets back for ``swapmeet con<TAB>`` and ``swapmeet node run --n<TAB>``."""
    env = clean_env(_SWAPMEET_COMPLETE="bash_complete", COMP_WORDS="swapmeet con", COMP_CWORD="1")
    proc = run_cli(env=env)
    assert proc.returncode == 0, proc.stderr
    assert "plain,config" in proc.stdout.splitlines()
    env.update(COMP_WORDS="swapmeet node run --n", COMP_CWORD="3")
    proc = run_cli(env=env)
    assert {"plain,--net", "plain,--no-mdns", "plain,--no-dht"} <= set(proc.stdout.splitlines())


@pytest.mark.slow
def test_node_run_uses_the_effective_configuration(tmp_path: Path) -> None:
    """File, environment and flag values reach a real node: ``node status`` reports them."""
    home = tmp_path / "home"
    assert run(home, "init", "--no-passphrase").returncode == 0
    write_config(home, 'listen = ["/ip4/127.0.0.1/tcp/0"]\nnet = "file-net"\nmdns = false\n')
    env = clean_env(SWAPMEET_DHT="no", SWAPMEET_NET="env-net")
    log = (tmp_path / "node.log").open("wb")  # a file, not a pipe: nobody reads it while the node runs
    node = subprocess.Popen(
        [*CLI, "--home", str(home), "node", "run", "--net", "flag-net"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        for _ in range(120):
            proc = run(home, "node", "status", "--json")
            if proc.returncode == 0 or node.poll() is not None:
                break
        assert proc.returncode == 0, (proc.stderr, node.poll(), (tmp_path / "node.log").read_text())
        status = json.loads(proc.stdout)
        assert status["net"] == "flag-net"
        assert status["addrs"] and all(a.startswith("/ip4/127.0.0.1/tcp/") for a in status["addrs"])
        assert run(home, "node", "stop").returncode == 0
        assert node.wait(timeout=30) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        log.close()


def run(home: Path, *args: str, env: dict[str, str] | None = None):
    return run_cli("--home", str(home), *args, env=env)

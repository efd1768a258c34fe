"""``[server] allow``, ``[server.tls]``, ``[fetch] allow``, ``[fetch.tls]`` and
``[consumers.fetch_tls]`` in the configuration: every bad value is exit 78 naming its key, from
``pipeline config check`` (no machine needed) or, for certificate files that do not load, from
the daemon at start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pipeline_cli import PIPELINE

from pipeline import config as config_module
from pipeline.access import connection_policy
from pipeline.errors import ConfigError
from scribe_compat.tls import TlsConfig


def pipeline(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPELINE, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[server]\nallow = ["10.0.0.0/8", "10.0.0.0/33"]\n', "server.allow", "entry 2"),
        ('[server]\nallow = ["10.1.0.0/8"]\n', "server.allow", "the network is 10.0.0.0/8"),
        ("[server]\nallow = [1]\n", "server.allow", "expected a string"),
        ('[fetch]\nallow = ["nope"]\n', "fetch.allow", "'nope', is not a CIDR network"),
        ('[server.tls]\ncert = "s.pem"\n', "server.tls.ca", "required to verify client"),
        ('[fetch.tls]\nkey = "k.pem"\n', "fetch.tls.key", "TLS is off without cert"),
        ('[server.tls]\nclient_certs = "maybe"\n', "server.tls.client_certs", "is not one of"),
        ("[server.tls]\nhandshake_timeout_s = 0\n", "server.tls.handshake_timeout_s", "> 0"),
        (
            '[server.tls]\ncert = "s.pem"\nca = "c.pem"\nallowed_clients = ["IP:x"]\n',
            "server.tls.allowed_clients",
            "not an IP address",
        ),
        (
            '[[consumers]]\nname = "g"\nfetch_from = "h:1"\n[consumers.files]\n'
            'file_path = "out"\n[consumers.fetch_tls]\nkey = "k.pem"\n',
            "consumers[0].fetch_tls.key",
            "set without cert",
        ),
    ],
)
def test_config_check_names_the_key_of_a_bad_setting(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        config_module.load(path, environ={})
    assert raised.value.key == key and problem in raised.value.problem
    if key == "server.allow":  # once through the command, as an operator sees it
        result = pipeline("config", "check", "--config", path)
        assert result.returncode == 78, result.stderr
        assert result.stderr.startswith("Error: ") and key in result.stderr
        assert problem in result.stderr


def test_the_environment_sets_an_allowlist(tmp_path: Path) -> None:
    environ = {"PIPELINE_SERVER__ALLOW": '["10.0.0.0/8", "127.0.0.1"]'}
    loaded = config_module.load(None, environ=environ)
    assert loaded.server.allow == ("10.0.0.0/8", "127.0.0.1")
    with pytest.raises(ConfigError) as raised:
        config_module.load(None, environ={"PIPELINE_SERVER__ALLOW": '["10.0.0.0/40"]'})
    assert raised.value.key == "server.allow"
    assert raised.value.source == "environment variable PIPELINE_SERVER__ALLOW"


def test_a_certificate_that_does_not_load_names_its_key(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for path in (missing, garbage):
        tls = TlsConfig(cert=path, ca=path)
        with pytest.raises(ConfigError) as raised:
            connection_policy(None, "127.0.0.1", tls, "fetch")
        assert raised.value.key == "fetch.tls.cert" and str(path) in raised.value.problem


def test_serve_with_a_certificate_that_does_not_load_exits_78(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    path = tmp_path / "tls.toml"
    path.write_text(f'[server.tls]\ncert = "{missing}"\nca = "{missing}"\n')
    result = pipeline(
        "serve", "--config", path, "--port", "0", "--journal-dir", tmp_path / "journal"
    )
    assert result.returncode == 78, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0]
    assert "'server.tls.cert'" in errors[0] and str(missing) in errors[0]

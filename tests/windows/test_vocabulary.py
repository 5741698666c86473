"""One vocabulary of start types and service names for `services set` and `apply`.

The same table of inputs goes through both entry points: what one accepts the other
accepts with the same meaning, and what one rejects the other rejects with the same words.
"""

from __future__ import annotations

import json

import pytest

from offline_ic.errors import InputError
from offline_ic.guest.windows.catalog import START_HELP, parse_start, resolve_services

# typed -> Start value (None: rejected). The union of what `services set` and change files
# accepted before they shared one vocabulary.
STARTS = [
    ("automatic", 2),
    ("auto", 2),
    ("manual", 3),
    ("enabled", 3),
    ("disabled", 4),
    ("2", 2),
    ("3", 3),
    ("4", 4),
    ("Manual", 3),
    ("DISABLED", 4),
    ("boot", None),
    ("system", None),
    ("0", None),
    ("1", None),
    ("5", None),
    ("on", None),
    ("", None),
]


@pytest.mark.parametrize("typed, start", STARTS)
def test_parse_start(typed, start):
    if start is None:
        with pytest.raises(InputError, match="boot and system apply to drivers only"):
            parse_start(typed)
    else:
        assert parse_start(typed) == start


def test_toml_values_that_are_not_words():
    assert parse_start(3) == 3
    for bad in (True, 3.0, ["manual"], 7):
        with pytest.raises(InputError):
            parse_start(bad)


@pytest.fixture(scope="module")
def image(win10_dynamic):
    return win10_dynamic  # only --dry-run below: nothing is written


def _after(out: str) -> int:
    (change,) = json.loads(out)["changes"]
    return change["after"]


@pytest.mark.parametrize("typed, start", STARTS)
def test_services_set_and_apply_agree(cli, image, tmp_path, typed, start):
    code_cli, out_cli, err_cli = cli(
        "services", "set", image, f"time-sync={typed}", "--dry-run", "--json"
    )
    change_file = tmp_path / "changes.toml"
    change_file.write_text(f'[services]\ntime-sync = "{typed}"\n')
    code_file, out_file, err_file = cli(
        "apply", image, "--file", change_file, "--dry-run", "--json"
    )
    if start is None:
        assert code_cli == 2 and code_file == 2
        message = f"start type {typed!r}: use {START_HELP}"
        assert message in " ".join(err_cli.split())  # click wraps its error lines
        assert message in err_file and "services.time-sync" in err_file
        # --json: the same error as an object on stdout (a usage error / a bad change file)
        assert json.loads(out_cli)["error"]["code"] == json.loads(out_file)["error"]["code"] == 2
        assert json.loads(out_cli)["error"]["kind"] == "usage"
        assert json.loads(out_file)["error"]["kind"] == "input"
        assert message in json.loads(out_file)["error"]["message"]
        return
    assert code_cli == 0, err_cli
    assert code_file == 0, err_file
    assert _after(out_cli) == _after(out_file) == start


@pytest.mark.parametrize("typed", ["time-sync", "Time Sync", "vmictimesync", "timesync"])
def test_service_names_resolve_the_same_everywhere(cli, image, tmp_path, typed):
    (spec,) = resolve_services(typed)
    assert spec.name == "vmictimesync"
    code, out, err = cli("services", "list", image, "--service", typed, "--json")
    assert code == 0, err
    assert [s["name"] for s in json.loads(out)["services"]] == ["vmictimesync"]
    code, out, err = cli("services", "set", image, f"{typed}=manual", "--dry-run", "--json")
    assert code == 0, err
    change_file = tmp_path / "changes.toml"
    change_file.write_text(f'[services]\n"{typed}" = "manual"\n')
    code, out_file, err = cli("apply", image, "--file", change_file, "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["changes"] == json.loads(out_file)["changes"]


def test_all_means_every_integration_service():
    assert len(resolve_services("all")) == len(resolve_services("ALL")) == 8

"""Config errors name file:line (or the variable), the key path and the reason, everywhere:
`[[array]]` entries, inline tables, env overrides, and the rules checked across keys."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ConfigError, SecretError, parse_config, read_secret
from agent.config.machinery import Positions

TWO_ENDPOINTS = """\
[upload]
enabled = true

[[upload.endpoints]]
name = "aws"
url = "https://sync-aws.example.org"
token = "t1"

[[upload.endpoints]]
name = "azure"
url = "ftp://sync-azure.example.org"
token = "t2"
"""


def _errors(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "s.toml", env)
    return str(err.value).splitlines()


def test_array_of_tables_entry_error_names_its_line():
    assert _errors(TWO_ENDPOINTS) == [
        "s.toml:11: upload.endpoints[1].url: 'ftp://sync-azure.example.org' must look like "
        "https://host or https://host/path"
    ]


def test_inline_tables_in_an_array_name_their_own_line():
    text = (
        "[upload]\n"
        "endpoints = [\n"
        '  { name = "aws", url = "https://a.example.org", token = "t" },\n'
        '  { name = "gcp", url = "https://g.example.org", token = "t", weight = 0 },\n'
        "]\n"
    )
    assert _errors(text) == ["s.toml:4: upload.endpoints[1].weight: 0.0 is below the minimum 0.001"]


def test_inline_table_section_names_its_line():
    text = '# comment\nstation = { id = "ridge-01" }\nmqtt = { host = "b", port = 70000 }\n'
    assert _errors(text) == ["s.toml:3: mqtt.port: 70000 is above the maximum 65535"]


def test_unknown_key_in_an_entry_suggests_the_near_one():
    text = TWO_ENDPOINTS.replace("ftp://", "https://") + "wieght = 3\n"
    (line,) = _errors(text)
    assert line.startswith(
        "s.toml:13: upload.endpoints[1].wieght: unknown key; did you mean `weight`? "
        "[[upload.endpoints]] takes: name, url, weight"
    )


def test_pattern_errors_say_what_the_value_must_look_like():
    (line,) = _errors('[http]\nlisten = "localhost"\n')
    assert line == (
        "s.toml:2: http.listen: 'localhost' must look like HOST:PORT, e.g. 127.0.0.1:8080 or "
        "[::1]:8080"
    )


def test_env_override_error_names_the_variable_not_a_line():
    lines = _errors("[mqtt]\nport = 1883\n", {"FIELDSTATION_MQTT_PORT": "70000"})
    assert lines == [
        "environment FIELDSTATION_MQTT_PORT: mqtt.port: 70000 is above the maximum 65535"
    ]


def test_unknown_env_key_names_the_variable_and_a_guess():
    (line,) = _errors("", {"FIELDSTATION_MQTT_PROT": "1"})
    assert line.startswith(
        "environment FIELDSTATION_MQTT_PROT: mqtt.prot: unknown key; did you mean"
    )


def test_missing_endpoint_name_and_url_are_caught_in_the_one_pass():
    text = '[[upload.endpoints]]\ntoken = "t"\n\n[[upload.endpoints]]\nname = "b"\ntoken = "t"\n'
    assert _errors(text) == [
        "s.toml:1: upload.endpoints[0].name: missing; every endpoint needs a name and a url",
        "s.toml:1: upload.endpoints[0].url: missing; every endpoint needs a name and a url",
        "s.toml:4: upload.endpoints[1].url: missing; every endpoint needs a name and a url",
    ]


def test_duplicate_endpoint_names_are_caught_with_the_second_line():
    text = TWO_ENDPOINTS.replace('"azure"', '"aws"').replace("ftp://", "https://")
    assert _errors(text) == [
        "s.toml:10: upload.endpoints[1].name: 'aws' is already the name of endpoints[0]"
    ]


def test_endpoint_without_any_token_is_caught():
    text = '[[upload.endpoints]]\nname = "a"\nurl = "https://a.example.org"\n'
    assert _errors(text) == ["s.toml:1: upload.endpoints[0]: needs `token` or `token_file`"]


def test_unreadable_token_files_are_caught_with_their_lines(tmp_path: Path):
    missing = tmp_path / "gone.token"
    text = (
        TWO_ENDPOINTS.replace("ftp://", "https://").replace(
            'token = "t2"', f'token_file = "{missing}"'
        )
        + f'\n[http]\ntoken_file = "{tmp_path}"\n'
    )
    lines = _errors(text, {"FIELDSTATION_MQTT_PASSWORD_FILE": str(missing)})
    assert lines[0] == (
        f"s.toml:12: upload.endpoints[1].token_file: cannot read {missing}: No such file or directory"
    )
    assert lines[1] == f"s.toml:15: http.token_file: cannot read {tmp_path}: Is a directory"
    assert lines[2] == (
        f"environment FIELDSTATION_MQTT_PASSWORD_FILE: mqtt.password_file: cannot read {missing}: "
        "No such file or directory"
    )


def test_a_readable_token_file_passes(tmp_path: Path):
    token = tmp_path / "aws.token"
    token.write_text("s3cret\n")
    config = parse_config(TWO_ENDPOINTS.replace("ftp://", "https://") + f'token_file = "{token}"\n')
    assert config.upload.endpoints[1].token_file == str(token)


def test_read_secret_names_the_key(tmp_path: Path):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "ok").write_text(" pw \n")
    assert read_secret(tmp_path / "ok", "mqtt.password_file") == "pw"
    with pytest.raises(SecretError, match=r"^mqtt.password_file: .*empty is empty$"):
        read_secret(tmp_path / "empty", "mqtt.password_file")
    with pytest.raises(SecretError, match=r"^http.token_file: cannot read .*nope: No such file"):
        read_secret(tmp_path / "nope", "http.token_file")


def test_config_check_command_catches_the_start_time_checks(tmp_path: Path):
    f = tmp_path / "station.toml"
    f.write_text(
        TWO_ENDPOINTS.replace('"azure"', '"aws"')
        .replace("ftp://", "https://")
        .replace('token = "t1"', 'token_file = "/nonexistent/aws.token"')
    )
    r = subprocess.run(
        [sys.executable, "-m", "agent", "config", "check", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert f"{f}:7: upload.endpoints[0].token_file: cannot read /nonexistent/aws.token" in r.stderr
    assert (
        f"{f}:10: upload.endpoints[1].name: 'aws' is already the name of endpoints[0]" in r.stderr
    )


@pytest.mark.parametrize("first", ["agent.upload.settings", "agent.inference.settings"])
def test_a_component_section_imports_first_without_a_cycle(first: str):
    code = f"import {first}; from agent.config import Config; print(Config().mqtt.port)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1883"


def test_the_machinery_imports_nothing_from_the_station():
    import ast

    root = Path(__file__).parents[2] / "agent" / "config"
    for name in ("machinery.py", "station.py"):
        tree = ast.parse((root / name).read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert {m for m in imported if m.startswith("agent")} <= {"agent.config.machinery"}, name


def test_mypy_sees_every_section_typed(tmp_path: Path):
    root = Path(__file__).parents[2]
    snippet = tmp_path / "use_config.py"
    snippet.write_text(
        "from agent.config import load_config\n"
        "config = load_config(None)\n"
        "reveal_type(config.mqtt.port)\n"
        "reveal_type(config.upload.endpoints[0].weight)\n"
        "reveal_type(config.inference.threads)\n"
    )
    files = ["agent/config", "cloud/config.py", "agent/upload/settings.py"]
    files += ["agent/inference/settings.py", str(snippet)]
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent"]
        + ["--cache-dir", str(tmp_path / "cache"), *files],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "No module named mypy" not in r.stderr, "install mypy (pyproject's test extra)"
    assert r.returncode == 0, r.stdout + r.stderr
    revealed = [
        line.split("Revealed type is ")[1] for line in r.stdout.splitlines() if "Revealed" in line
    ]
    assert revealed == ['"int"', '"float"', '"int"']


VALUES = [
    "1",
    '"a # , ] } [[x]]"',
    "'lit # ]'",
    '"""multi\nline = 2\n[fake]"""',
    "'''x\n'''",
    '"esc \\" q"',
    "[1,\n  2, # c ]\n  3]",
    '{ a = 1, b = "x}" }',
    "[{ a = 1 }, { b = [2, 3] }]",
    "1979-05-27T07:32:00Z",
    "true",
]


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["table", "array", "comment", "blank"]),
            st.sampled_from(VALUES),
        ),
        max_size=30,
    )
)
def test_every_key_table_and_entry_gets_the_line_it_was_written_on(parts: list[str]):
    lines: list[str] = []
    expected: dict[str, int] = {}
    table, entries = "", 0
    for n, part in enumerate(parts):
        here = 1 + sum(written.count("\n") + 1 for written in lines)
        if part == "table":
            table = f"t{n}"
            lines.append(f"[{table}]  # a table")
        elif part == "array":
            table = f"arr[{entries}]"
            entries += 1
            lines.append("[[arr]]")
        elif part == "comment":
            lines.append("# k = 1")
            continue
        elif part == "blank":
            lines.append("")
            continue
        else:
            lines.append(f"k{n} = {part}")
            expected[f"{table}.k{n}" if table else f"k{n}"] = here
            continue
        expected[table] = here
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # the generator writes valid TOML only
    found = Positions(text)
    assert {path: found.line(path) for path in expected} == expected


def test_sections_wired_into_config_import_the_machinery_not_the_package():
    """`from agent.config import opt` in a wired section would make the composition a cycle."""
    import ast

    root = Path(__file__).parents[2]
    load = ast.parse((root / "agent" / "config" / "load.py").read_text())
    wired = [
        node.module
        for node in load.body
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("agent.")
        and not node.module.startswith("agent.config")
    ]
    assert "agent.upload.settings" in wired and "agent.inference.settings" in wired
    for module in wired:
        tree = ast.parse((root / (module.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "agent.config":
                pytest.fail(f"{module} imports agent.config; import agent.config.machinery instead")

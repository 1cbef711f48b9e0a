"""The README's examples run as shown (the sqlite-utils habit): config files, commands, output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def fieldstation(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == kind]


def example_files() -> dict[str, str]:
    """TOML blocks whose first line is `# NAME.toml`: the files the examples run on."""
    files = {}
    for body in blocks("toml"):
        first = body.splitlines()[0]
        if re.fullmatch(r"# [\w.-]+\.toml", first):
            files[first[2:]] = body
    return files


def transcripts(command: str) -> list[tuple[str, list[str]]]:
    """(`$ fieldstation ...` line, the output lines shown under it) for one command's examples;
    a command line ending in a backslash goes on on the next line."""
    found: list[tuple[list[str], list[str]]] = []
    for body in blocks("text"):
        current: tuple[list[str], list[str]] | None = None
        continued = False
        for line in body.splitlines():
            if line.startswith("$ ") or (current is not None and continued):
                if line.startswith("$ "):
                    current = ([], [])
                    found.append(current)
                assert current is not None
                current[0].append(line.removeprefix("$ ").removesuffix("\\").strip())
                continued = line.endswith("\\")
            elif current is not None:
                current[1].append(line)
    out = [(" ".join(cmd), _trim(lines)) for cmd, lines in found]
    return [(cmd, lines) for cmd, lines in out if cmd.startswith(command)]


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def same(shown: list[str], real: list[str]) -> bool:
    """Shown output equals the real output; a shown line ending in '…' is a prefix of the real."""
    if len(shown) != len(real):
        return False
    return all(
        r.startswith(s[:-1].rstrip()) if s.endswith("…") else r == s
        for s, r in zip(shown, real, strict=True)
    )


def test_readme_has_the_config_examples_and_their_files():
    assert {"station.toml", "bad.toml"} <= set(example_files())
    assert len(transcripts("fieldstation config check")) >= 2


@pytest.mark.parametrize("index", [0, 1])
def test_config_check_examples_print_what_the_readme_shows(tmp_path, index):
    for name, text in example_files().items():
        (tmp_path / name).write_text(text)
    command, shown = transcripts("fieldstation config check")[index]
    args = command.split()[1:]
    r = fieldstation(*args, cwd=tmp_path)
    real = (r.stdout + r.stderr).splitlines()
    assert same(shown, real), "\n".join(["README shows:", *shown, "the command prints:", *real])
    assert r.returncode == (0 if shown[0].endswith(": ok") else 2)


def test_config_example_is_a_file_config_check_accepts(tmp_path):
    # README: fieldstation config example > station.toml; fieldstation config check station.toml
    assert any("fieldstation config example > station.toml" in b for b in blocks("sh"))
    example = fieldstation("config", "example", cwd=tmp_path)
    assert example.returncode == 0, example.stderr
    (tmp_path / "station.toml").write_text(example.stdout)
    r = fieldstation("config", "check", "station.toml", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("station.toml: ok"), r.stdout + r.stderr


def test_config_example_shows_every_key_of_the_readme_table(tmp_path):
    example = fieldstation("config", "example", cwd=tmp_path).stdout
    keys: dict[str, set[str]] = {}
    section = ""
    for line in example.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"(\w+) = ", line):
            keys.setdefault(section, set()).add(m.group(1))
    text = README.read_text()
    table = text[text.index("| section | key | default | meaning |") :]
    table = table[: table.index("\n\n")]
    section = ""
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        section = cells[0].strip("`") or section
        for key in re.findall(r"`(\w+)`", cells[1]):
            assert key in keys.get(section, set()), f"README lists {section}.{key}; not in example"


def test_the_readme_command_list_is_fieldstation_help(tmp_path):
    r = fieldstation("--help", cwd=tmp_path)
    helped: dict[str, str] = {}
    name = ""
    for line in r.stdout.split("options:")[0].splitlines():
        if m := re.fullmatch(r"    (\w+) +(\S.*)", line):
            name = m.group(1)
            helped[name] = m.group(2)
        elif name and re.fullmatch(r" {20,}\S.*", line):  # argparse wrapped a long help
            helped[name] += " " + line.strip()
    text = README.read_text()
    listed = dict(re.findall(r"^\| `fieldstation (\w+)` \| (.*?) \|$", text, re.M))
    assert listed == helped


REPO = README.parent


def test_esp32_configure_dry_run_prints_what_the_readme_shows(tmp_path):
    [(command, shown)] = transcripts("fieldstation esp32 configure")
    (tmp_path / "wifi.txt").write_text("field-net-passphrase\n")
    r = fieldstation(*command.split()[1:], cwd=tmp_path)
    # the partition table is named by its absolute path: the README's stands for any checkout
    real = r.stdout.replace(str(REPO), "/home/you/fieldstation").splitlines()
    assert r.returncode == 0, r.stderr
    assert same(shown, real), "\n".join(["README shows:", *shown, "the command prints:", *real])
    assert (tmp_path / "nvs-out" / "nvs-cam-north-01.bin").stat().st_size == 24 * 1024


def test_models_list_prints_the_lines_the_readme_shows():
    """Run where a fresh clone runs it (the checkout); '…' stands for the other packages."""
    [(command, shown)] = transcripts("fieldstation models list")
    r = fieldstation(*command.split()[1:], cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    real = r.stdout.splitlines()
    assert real[0].startswith("runtime   ai-edge-litert ")  # the installed version may differ
    assert real[1:3] == shown[1:3]  # the folders searched, the column heads
    rows = {line.split()[0]: line for line in real[3:]}
    for line in shown[3:]:
        if line == "…":
            continue
        name = line.split()[0]
        if "not installed" in rows.get(name, ""):  # BlazeFace's optional wheel is absent here
            continue
        assert rows.get(name) == line, (
            f"README shows:\n{line}\nthe command prints:\n{rows.get(name)}"
        )


def _demo_lines(lines: list[str]) -> list[str]:
    """The demo's lines with what differs from run to run masked, in a fixed order (the
    'analysed' lines interleave with the sends as the worker keeps up)."""
    masks = [
        (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
        (r"/tmp/fieldstation-demo-\w+", "/tmp/fieldstation-demo-X"),
        (r"/dev/pts/\d+", "/dev/pts/N"),
        (r" +\d+\.\d+ ms", " T ms"),
        (r"elapsed +\S+ s", "elapsed T s"),
        (r"-t\d+-", "-tT-"),  # the HTTP unit's ids carry the station's receive time
    ]
    out = []
    for line in lines:
        if re.fullmatch(r"  uploaded \d+/\d+ to the cloud", line):
            continue  # progress: how many had arrived when the demo looked
        for pattern, mask in masks:
            line = re.sub(pattern, mask, line)
        out.append(line)
    return sorted(out)


def test_demo_prints_what_the_readme_shows(tmp_path):
    [(command, shown)] = transcripts("fieldstation demo")
    r = fieldstation(*command.split()[1:], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    real = _trim((r.stdout + r.stderr).splitlines())
    assert _demo_lines(shown) == _demo_lines(real), "\n".join(["the demo prints:", *real])

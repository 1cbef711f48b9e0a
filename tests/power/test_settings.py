"""The [power] section: thresholds that overlap or are out of order are refused with their line."""

from __future__ import annotations

import pytest

from agent.cli import main
from agent.power.settings import parse_duration
from tests.helpers import free_port


def test_config_check_names_the_line_of_each_bad_threshold(tmp_path, capsys):
    conf = tmp_path / "station.toml"
    conf.write_text(
        "[power]\n"
        "eco_enter_soc = 50\n"
        "eco_leave_soc = 45\n"
        "critical_enter_soc = 60\n"
        "critical_leave_soc = 70\n"
        "\n"
        "[[power.policy]]\n"
        'state = "eco"\n'
        'quiet = "22:00"\n'
        "[[power.sources]]\n"
        'kind = "vedirect"\n'
    )
    assert main(["config", "check", str(conf)]) == 2
    err = capsys.readouterr().err
    assert f"{conf}:2: power.eco_enter_soc: 50.0 must be below eco_leave_soc (45.0)" in err
    assert f"{conf}:4: power.critical_enter_soc: 60.0 must be below eco_enter_soc" in err
    assert "power.critical_leave_soc: 70.0 overlaps eco_leave_soc (45.0)" in err
    assert "power.policy[0].quiet: '22:00' is not a window" in err
    assert "power.sources[0].port: a vedirect source needs its serial port" in err


def test_a_sound_power_section_passes(tmp_path, capsys):
    conf = tmp_path / "station.toml"
    conf.write_text(
        f'[station]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        '[power]\nshutdown_command = ["systemctl", "poweroff"]\n'
        '[[power.sources]]\nkind = "hwmon"\nname = "ina219"\nchemistry = "lead-acid"\ncells = 6\n'
        '[[power.policy]]\nstate = "critical"\ncapture_interval_s = 7200\nquiet = "19:00-07:00"\n'
    )
    assert main(["config", "check", str(conf)]) == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("2h", 7200), ("90s", 90), ("900", 900), ("1d", 86400)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "m", "-5m", "8d", "3x"])
def test_bad_durations_say_what_is_wanted(text):
    with pytest.raises(ValueError, match="duration|outside"):
        parse_duration(text)

"""Loading run configs: defaults, paths, types, unknown keys and refused secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulk import config
from bulk.errors import ConfigError
from bulk.runs import fingerprints


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
[run]
name = "demo"

[sweep]
grid.x = [1, 2, 3]

[job]
command = "echo {x}"
"""


class TestLoad:
    def test_minimal_config_gets_defaults(self, tmp_path: Path) -> None:
        """A config with only run, sweep and job loads with the local backend's defaults."""
        cfg = config.load(write(tmp_path, MINIMAL))

        assert "demo" == cfg.run.name
        assert tmp_path / ".bulk" / "demo" == cfg.run.dir
        assert "local" == cfg.backend.kind
        assert (("x", (1, 2, 3)),) == cfg.sweep.grid
        assert cfg.limits.max_active >= 1
        assert {"x"} | {"_key"} >= cfg.template.variables

    def test_relative_paths_resolve_against_the_config_folder(self, tmp_path: Path) -> None:
        """Sweep files and the run dir are relative to the config, not the working folder."""
        text = MINIMAL.replace('name = "demo"', 'name = "demo"\ndir = "state"').replace(
            "grid.x", 'files = ["data/a.csv"]\ngrid.x'
        )
        cfg = config.load(write(tmp_path, text))

        assert tmp_path / "state" == cfg.run.dir
        assert (tmp_path / "data" / "a.csv",) == cfg.sweep.files

    def test_ranges_expand(self, tmp_path: Path) -> None:
        """range excludes its stop, linspace includes its last value."""
        text = MINIMAL.replace(
            "grid.x = [1, 2, 3]",
            "grid.x = {range = [0, 1, 0.25]}\ngrid.y = {linspace = [0, 1, 3]}\n"
            "grid.z = {range = [2, 5]}",
        ).replace("{x}", "{x} {y} {z}")
        cfg = config.load(write(tmp_path, text))

        assert ("x", (0.0, 0.25, 0.5, 0.75)) == cfg.sweep.grid[0]
        assert ("y", (0.0, 0.5, 1.0)) == cfg.sweep.grid[1]
        assert ("z", (2, 3, 4)) == cfg.sweep.grid[2]

    def test_service_budget_defaults_per_backend_and_can_be_changed_or_off(
        self, tmp_path: Path
    ) -> None:
        """Gongji shares a budget across endpoints by default; local has none; 0 turns it off."""
        gongji = MINIMAL.replace("[job]", '[backend]\nkind = "gongji"\n[job]').replace(
            'command = "echo {x}"', 'task_name = "{_name}"'
        )

        assert config.load(write(tmp_path, MINIMAL)).limits.service_rate_per_s is None
        assert 10.0 == config.load(write(tmp_path, gongji)).limits.service_rate_per_s
        more = config.load(write(tmp_path, gongji + "[limits]\nservice_rate_per_s = 40\n"))
        assert 40.0 == more.limits.service_rate_per_s
        off = config.load(write(tmp_path, gongji + "[limits]\nservice_rate_per_s = 0\n"))
        assert off.limits.service_rate_per_s is None

    def test_an_endpoint_rate_above_the_budget_is_pointed_out(self, tmp_path: Path) -> None:
        """Raising one endpoint's rate past the shared budget gets a note saying what caps it."""
        gongji = MINIMAL.replace("[job]", '[backend]\nkind = "gongji"\n[job]').replace(
            'command = "echo {x}"', 'task_name = "{_name}"'
        )
        fast = config.load(write(tmp_path, gongji + "[limits]\nsubmit_rate_per_s = 50\n"))

        assert [] == config.load(write(tmp_path, gongji)).limits.over_budget()
        (note,) = fast.limits.over_budget()
        assert note.startswith("limits.submit_rate_per_s (50/s) is above limits.service_rate")

    def test_limits_change_does_not_change_the_fingerprints(self, tmp_path: Path) -> None:
        """Slowing a run down must not block its resume; changing the template must."""
        base = fingerprints(config.load(write(tmp_path, MINIMAL)))
        slower = config.load(write(tmp_path, MINIMAL + "\n[limits]\nmax_active = 1\n"))
        changed = config.load(write(tmp_path, MINIMAL.replace("echo", "printf")))

        assert base == fingerprints(slower)
        assert base["fp_job"] != fingerprints(changed)["fp_job"]
        assert base["fp_sweep"] == fingerprints(changed)["fp_sweep"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            MINIMAL.replace('name = "demo"', 'name = "Demo Run"'),
            "run.name: 'Demo Run' is not a valid run name",
            id="bad-name",
        ),
        pytest.param(
            MINIMAL + "\n[retry]\nattempts = 0\n",
            "retry.attempts: 0 must be greater than 0",
            id="non-positive",
        ),
        pytest.param(
            MINIMAL + "\n[track]\ntimeout_s = true\n",
            "track.timeout_s: expected a number, got true or false True",
            id="bool-is-not-a-number",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [1, 1]"),
            "sweep.grid.x: an axis repeats a value",
            id="repeated-axis-value",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [1]\nzip.x = [2]"),
            "sweep.zip.x: variable is already declared in sweep.grid",
            id="variable-twice",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "random.samples = 3"),
            "sweep.random.params: random.samples is set but no random.params",
            id="random-without-params",
        ),
        pytest.param(
            MINIMAL.replace(
                "grid.x = [1, 2, 3]", "random.samples = 3\nrandom.params.x = {normal = [0, 1]}"
            ),
            "sweep.random.params.x: unknown distribution 'normal'",
            id="unknown-distribution",
        ),
        pytest.param(
            MINIMAL.replace("[sweep]\ngrid.x = [1, 2, 3]", "[sweep]"),
            "sweep.files: the sweep is empty",
            id="empty-sweep",
        ),
        pytest.param("[run\n", "invalid TOML", id="bad-toml"),
        pytest.param(
            MINIMAL + "\n[backend]\nprivate_key = 'x'\n",
            "backend.private_key: secrets are never written in a config",
            id="inline-key",
        ),
        pytest.param(
            MINIMAL.replace('command = "echo {x}"', 'command = "echo {x}"\nwhen = 1979-05-27'),
            "job.when: date values cannot be sent as JSON",
            id="toml-date-in-template",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each bad config raises one ConfigError naming the file, the key and the problem."""
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))

    message = str(info.value)
    assert message.startswith(str(tmp_path / "run.toml"))
    assert expected in message
    assert "\n" not in message


def test_template_file(tmp_path: Path) -> None:
    """[job] template_file loads a JSON template, relative to the config."""
    (tmp_path / "job.json").write_text('{"command": "echo {x}"}')
    text = MINIMAL.replace('command = "echo {x}"', 'template_file = "job.json"')
    cfg = config.load(write(tmp_path, text))

    assert {"command": "echo 2"} == cfg.template.render({"x": 2})
    assert str(tmp_path / "job.json") == cfg.template_where


def test_missing_file(tmp_path: Path) -> None:
    """A missing config is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "nope.toml")

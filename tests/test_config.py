"""Loading run configs: defaults, paths, types, unknown keys and refused secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import bulk._config as config
from bulk._runs import fingerprints
from bulk.errors import ConfigError


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

        grid = [(name, tuple(values)) for name, values in cfg.sweep.grid]
        assert [("x", (0.0, 0.25, 0.5, 0.75)), ("y", (0.0, 0.5, 1.0)), ("z", (2, 3, 4))] == grid
        x = cfg.sweep.grid[0][1]
        assert (4, 0.25, 0.75, [0.25, 0.5]) == (len(x), x[1], x[-1], x[1:3])

    def test_ranges_are_lazy(self, tmp_path: Path, bounded_python: Any) -> None:
        """Ranges and linspaces of 5×10⁷ values load in a process capped at 256 MB, at once
        and without growing (they were built as tuples: a MemoryError, 862 MB for 2×10⁷)."""
        (tmp_path / "run.toml").write_text(
            '[run]\nname = "big"\n[sweep]\nmax_jobs = 50_000_000\n'
            "zip.i = {range = [0, 50_000_000]}\n"
            "zip.f = {range = [0.5, 50_000_000.5, 1.0]}\n"
            "zip.l = {linspace = [0, 1, 50_000_000]}\n"
            '[job]\ncommand = "echo {i} {f} {l}"\n'
        )
        code = (
            "import resource, time\n"
            "import bulk._config as config\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "start = time.perf_counter()\n"
            "cfg = config.load('run.toml')\n"
            "took = time.perf_counter() - start\n"
            "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
            "print([(n, len(v), v[1], v[-1]) for n, v in cfg.sweep.zip])\n"
            "print(took < 5, grown < 20_000)\n"  # seconds, KiB
        )

        result = bounded_python(code, tmp_path)

        assert 0 == result.returncode, result.stderr[-2000:]
        ranges, bounded = result.stdout.splitlines()
        assert "True True" == bounded
        assert (
            "[('i', 50000000, 1, 49999999), ('f', 50000000, 1.5, 49999999.5), "
            "('l', 50000000, 2.00000004e-08, 1.0)]"
        ) == ranges

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
            MINIMAL.replace('name = "demo"', 'name = "demo\\n"'),
            "run.name: 'demo\\n' is not a valid run name",
            id="name-with-trailing-newline",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", 'grid."x\\n" = [1, 2, 3]'),
            'sweep.grid."x\\n": variable names are letters, digits and',
            id="variable-with-trailing-newline",
        ),
        pytest.param(
            MINIMAL.replace(
                "grid.x = [1, 2, 3]",
                'random.samples = 1\nrandom.params."x\\n" = {uniform = [0, 1]}',
            ),
            'sweep.random.params."x\\n": variable names are letters, digits and',
            id="random-variable-with-trailing-newline",
        ),
        pytest.param(
            MINIMAL + '\n[limits]\n"max\\ninflight" = 1\n',
            'limits."max\\ninflight": unknown key; valid keys here:',
            id="unknown-key-with-newline-stays-one-line",
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
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [1.5,\n  nan]"),
            "run.toml:7: nan is not a finite number; JSON has no NaN or infinity",
            id="toml-nan-names-its-line",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [-inf]"),
            "run.toml:6: -inf is not a finite number",
            id="toml-inf",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [1e400]"),
            "run.toml:6: 1e400 is too large for a 64-bit float (it would be infinity)",
            id="toml-float-overflow",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [1e-400]"),
            "run.toml:6: 1e-400 is too small for a 64-bit float (it would be 0.0)",
            id="toml-float-underflow",
        ),
        pytest.param(
            MINIMAL + "\n[retry]\nbudget_s = inf\n",
            "run.toml:12: inf is not a finite number",
            id="toml-inf-in-a-setting",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [18446744073709551616]"),
            "sweep.grid.x: 18446744073709551616 does not fit in 64 bits",
            id="integer-past-64-bits",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [1]\nrandom.seed = 2e0\n"),
            "sweep.random.seed: expected an integer, got a number 2.0",
            id="float-seed",
        ),
        pytest.param(
            MINIMAL.replace(
                "grid.x = [1, 2, 3]", "grid.x = [1]\nrandom.seed = 100000000000000000000000"
            ),
            "sweep.random.seed: 100000000000000000000000 does not fit in 64 bits",
            id="seed-past-64-bits",
        ),
        pytest.param(
            MINIMAL.replace(
                "grid.x = [1, 2, 3]",
                "random.samples = 2\nrandom.params.x = {choice = [-9223372036854775809]}",
            ),
            "sweep.random.params.x: -9223372036854775809 does not fit in 64 bits",
            id="choice-past-64-bits",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = [1" + "0" * 5000 + "]"),
            "invalid TOML: an integer too long to read",
            id="integer-past-python-digit-limit",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", f"grid.x = [{'[' * 65}{']' * 65}]"),
            "sweep.grid.x: nested more than 64 levels deep; the limit is 64",
            id="value-nested-too-deep",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", f"grid.x = [{'[' * 5000}{']' * 5000}]"),
            "invalid TOML: nested too deeply (the limit is 64 levels)",
            id="toml-nested-past-recursion",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = {linspace = [-1.7e308, 1.7e308, 3]}"),
            "sweep.grid.x: linspace: last - first is beyond the range of a 64-bit float",
            id="linspace-span-overflows",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = {range = [-1.7e308, 1.7e308, 1e-300]}"),
            "sweep.grid.x: range [-1.7e+308, 1.7e+308, 1e-300] has too many values to count",
            id="range-count-overflows",
        ),
        pytest.param(
            MINIMAL.replace("grid.x = [1, 2, 3]", "grid.x = {range = [1, 1.0000000000001, 1e-14]}"),
            "sweep.grid.x: range values repeat once rounded to 12 significant digits",
            id="range-values-round-together",
        ),
        pytest.param(
            MINIMAL.replace(
                "grid.x = [1, 2, 3]", "grid.x = {linspace = [1e6, 1.00000000001e6, 3]}"
            ),
            "sweep.grid.x: linspace values repeat once rounded to 12 significant digits",
            id="linspace-values-round-together",
        ),
        pytest.param(
            MINIMAL.replace(
                "grid.x = [1, 2, 3]",
                "grid.x = {range = [18446744073709551610, 18446744073709551620]}",
            ),
            "sweep.grid.x: 18446744073709551619 does not fit in 64 bits",
            id="range-past-64-bits",
        ),
        pytest.param(
            MINIMAL.replace(
                "grid.x = [1, 2, 3]",
                "random.samples = 2\nrandom.params.x = {uniform = [-1.7e308, 1.7e308]}",
            ),
            "sweep.random.params.x: uniform: high - low is beyond the range of a 64-bit float",
            id="uniform-span-overflows",
        ),
        pytest.param(
            MINIMAL.replace(
                'command = "echo {x}"', 'command = "echo {x}"\nn = 18446744073709551616'
            ),
            "job.n: 18446744073709551616 does not fit in 64 bits",
            id="template-integer-past-64-bits",
        ),
        pytest.param(
            MINIMAL.replace(
                'command = "echo {x}"', f'command = "echo {{x}}"\nn = {"[" * 65}{"]" * 65}'
            ),
            "job.n: nested more than 64 levels deep; the limit is 64",
            id="template-nested-too-deep",
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


def sweep(lines: str) -> str:
    """MINIMAL with its ``[sweep]`` body replaced by ``lines``."""
    return MINIMAL.replace("grid.x = [1, 2, 3]", lines)


def random_param(distribution: str) -> str:
    return sweep(f"random.samples = 2\nrandom.params.x = {{{distribution}}}")


RANGES = "use {range = [start, stop, step]} or {linspace = [first, last, count]}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            sweep("grid.x = {range = [0, 1], linspace = [0, 1, 2]}"),
            f"sweep.grid.x: a numeric range has exactly one key; {RANGES}",
            id="two-range-kinds",
        ),
        pytest.param(
            sweep("grid.x = {span = [0, 1]}"),
            f"sweep.grid.x: unknown range 'span'; {RANGES}",
            id="unknown-range-kind",
        ),
        pytest.param(
            sweep("grid.x = {range = 3}"), "sweep.grid.x: unknown range 'range'", id="range-no-list"
        ),
        pytest.param(
            sweep('grid.x = {range = [0, "9"]}'),
            f"sweep.grid.x: range takes numbers; {RANGES}",
            id="range-of-text",
        ),
        pytest.param(
            sweep("grid.x = {range = [true, 3]}"),
            "sweep.grid.x: range takes numbers",
            id="range-of-bool",
        ),
        pytest.param(
            sweep("grid.x = {range = [5]}"),
            "sweep.grid.x: range takes [start, stop] or [start, stop, step]",
            id="range-one-number",
        ),
        pytest.param(
            sweep("grid.x = {range = [0, 5, 1, 2]}"),
            "sweep.grid.x: range takes [start, stop] or [start, stop, step]",
            id="range-four-numbers",
        ),
        pytest.param(
            sweep("grid.x = {range = [0, 5, 0]}"),
            "sweep.grid.x: range step must not be 0",
            id="range-step-zero",
        ),
        pytest.param(
            sweep("grid.x = {range = [5, 0]}"),
            "sweep.grid.x: an axis needs at least one value",
            id="range-empty",
        ),
        pytest.param(
            sweep("grid.x = {linspace = [0, 1]}"),
            "sweep.grid.x: linspace takes [first, last, count] with an integer count >= 1",
            id="linspace-two-numbers",
        ),
        pytest.param(
            sweep("grid.x = {linspace = [0, 1, 2.5]}"),
            "sweep.grid.x: linspace takes [first, last, count] with an integer count >= 1",
            id="linspace-float-count",
        ),
        pytest.param(
            sweep("grid.x = {linspace = [0, 1, 0]}"),
            "sweep.grid.x: linspace takes [first, last, count] with an integer count >= 1",
            id="linspace-count-zero",
        ),
        pytest.param(
            random_param("uniform = [0, 1], choice = [1]"),
            "sweep.random.params.x: give exactly one distribution; one of uniform = [low, high]",
            id="two-distributions",
        ),
        pytest.param(
            random_param("uniform = 1"),
            "sweep.random.params.x: unknown distribution 'uniform'",
            id="distribution-no-list",
        ),
        pytest.param(
            random_param("choice = []"),
            "sweep.random.params.x: choice needs at least one option",
            id="choice-empty",
        ),
        pytest.param(
            random_param("uniform = [1, 0]"),
            "sweep.random.params.x: uniform takes [low, high] with low < high",
            id="uniform-reversed",
        ),
        pytest.param(
            random_param("uniform = [0, 1, 2]"),
            "sweep.random.params.x: uniform takes [low, high] with low < high",
            id="uniform-three-numbers",
        ),
        pytest.param(
            random_param('randint = [0, "9"]'),
            "sweep.random.params.x: randint takes [low, high] with low < high",
            id="randint-text",
        ),
        pytest.param(
            random_param("uniform = [false, true]"),
            "sweep.random.params.x: uniform takes [low, high] with low < high",
            id="uniform-bools",
        ),
        pytest.param(
            random_param("loguniform = [0, 1]"),
            "sweep.random.params.x: loguniform needs low > 0",
            id="loguniform-from-zero",
        ),
        pytest.param(
            random_param("randint = [0, 1.5]"),
            "sweep.random.params.x: randint takes integer bounds",
            id="randint-float",
        ),
        pytest.param(
            sweep("random.samples = -1\nrandom.params.x = {choice = [1]}"),
            "sweep.random.samples: -1 must be 0 or more",
            id="samples-negative",
        ),
        pytest.param(
            sweep("files = [1]"),
            "sweep.files: expected a file name or an array of file names",
            id="files-not-names",
        ),
    ],
)
def test_bad_sweep_grammar_names_the_axis(tmp_path: Path, text: str, expected: str) -> None:
    """Each malformed axis or distribution is refused with its own message."""
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))

    assert expected in str(info.value)


def test_good_ranges_and_distributions_load(tmp_path: Path) -> None:
    """Ranges count down, linspace keeps a count of 1, and each distribution kind loads."""
    text = sweep(
        "grid.a = {range = [5, 0, -2]}\ngrid.b = {linspace = [3, 9, 1]}\n"
        "random.samples = 1\nrandom.params.u = {uniform = [0, 1]}\n"
        "random.params.l = {loguniform = [1e-3, 1]}\nrandom.params.r = {randint = [1, 4]}\n"
        "random.params.c = {choice = ['x', 2]}"
    )
    cfg = config.load(write(tmp_path, text))

    assert [5, 3, 1] == list(dict(cfg.sweep.grid)["a"])
    assert [3] == list(dict(cfg.sweep.grid)["b"])
    assert [
        ("u", config.Distribution("uniform", (0, 1))),
        ("l", config.Distribution("loguniform", (1e-3, 1))),
        ("r", config.Distribution("randint", (1, 4))),
        ("c", config.Distribution("choice", ("x", 2))),
    ] == list(cfg.sweep.random_params)


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


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param('{"command": "echo {x}", "n": NaN}', "NaN is not a finite number", id="nan"),
        pytest.param(
            '{"command": "echo {x}", "n": -Infinity}',
            "-Infinity is not a finite number",
            id="infinity",
        ),
        pytest.param(
            '{"command": "echo {x}", "n": 1e400}',
            "1e400 is too large for a 64-bit float",
            id="overflow",
        ),
        pytest.param(
            '{"command": "echo {x}", "n": 1e-400}',
            "1e-400 is too small for a 64-bit float (it would be 0.0)",
            id="underflow",
        ),
        pytest.param(
            '{"command": "echo {x}", "n": 123456789012345678901234567890}',
            "123456789012345678901234567890 does not fit in 64 bits",
            id="integer-past-64-bits",
        ),
        pytest.param(
            '{"command": "echo {x}", "env": {"A": "1", "A": "2"}}',
            "key 'A' appears twice in one object; each key appears once",
            id="duplicate-key",
        ),
        pytest.param(
            '{"command": "echo {x}", "n": ' + "[" * 5000 + "]" * 5000 + "}",
            "nested more than 64 levels deep at column 93; the limit is 64",
            id="nested-past-recursion",
        ),
    ],
)
def test_json_template_file_is_read_exactly(tmp_path: Path, body: str, expected: str) -> None:
    """A JSON template file with a value JSON would not carry back unchanged is refused."""
    (tmp_path / "job.json").write_text(body)
    text = MINIMAL.replace('command = "echo {x}"', 'template_file = "job.json"')

    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))

    assert f"{tmp_path / 'job.json'}: {expected}" in str(info.value)


class TestCountBeforeExpanding:
    """A sweep is counted by arithmetic and checked against the guard before anything is
    built: each case once took gigabytes (or the OOM killer); here it runs in a process
    capped at a few hundred MB."""

    @pytest.mark.parametrize(
        ("sweep", "total"),
        [
            pytest.param("grid.x = {range = [0, 9999999]}", "9,999,999", id="range"),
            pytest.param(
                "grid.x = {linspace = [0, 1, 1000000000]}", "1,000,000,000", id="linspace"
            ),
            pytest.param(
                "grid.x = {range = [0, 1000000]}\ngrid.y = {range = [0, 1000000]}",
                "1,000,000,000,000",
                id="two-axes",
            ),
            pytest.param(
                "zip.x = {range = [0, 1000000000]}\nzip.y = {linspace = [0, 1, 1000000000]}",
                "1,000,000,000",
                id="zip",
            ),
            pytest.param(
                "grid.x = [1, 2]\nrandom.samples = 1000000000000\n"
                "random.params.y = {uniform = [0, 1]}",
                "2,000,000,000,000",
                id="random",
            ),
        ],
    )
    @pytest.mark.parametrize("command", ["plan", "run"])
    def test_guard_refuses_before_expanding(
        self, tmp_path: Path, bounded_bulk: Any, sweep: str, total: str, command: str
    ) -> None:
        """Past the guard: exit 2 with the count, in bounded memory and time; nothing made."""
        write(tmp_path, MINIMAL.replace("grid.x = [1, 2, 3]", sweep))

        result = bounded_bulk(command, "run.toml", cwd=tmp_path)

        first = result.stderr.splitlines()[0] if result.stderr else ""
        assert 2 == result.returncode, result.stderr[-2000:]
        assert (
            f"run.toml: sweep.max_jobs: the sweep expands to {total} jobs, above the guard "
            "of 100,000" in first
        )
        assert not (tmp_path / ".bulk").exists()

    def test_per_row_expansion_past_the_guard(self, tmp_path: Path) -> None:
        """With sweep files, the guard names what each row expands to."""
        text = MINIMAL.replace(
            "grid.x = [1, 2, 3]", 'files = "s.csv"\ngrid.x = {range = [0, 200000]}'
        )

        with pytest.raises(
            ConfigError, match="each row of the sweep files expands to 200,000 jobs"
        ):
            config.load(write(tmp_path, text))

    def test_within_the_guard_expands(self, tmp_path: Path) -> None:
        """Raising the guard lets the same sweep through, expanded exactly."""
        text = MINIMAL.replace(
            "grid.x = [1, 2, 3]", "max_jobs = 1000000\ngrid.x = {range = [0, 1000000, 1]}"
        )

        values = config.load(write(tmp_path, text)).sweep.grid[0][1]

        assert (1_000_000, 0, 999_999) == (len(values), values[0], values[-1])

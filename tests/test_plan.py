"""``bulk plan``'s report: template problems once, row problems grouped, bounded previews."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

import bulk._plan._check as plan
from bulk._cli import main
from bulk._problems import Problem
from bulk._text import short_repr


def write(folder: Path, config: str, rows: list[dict[str, Any]] | None = None) -> Path:
    """A config (and its sweep.jsonl) in ``folder``; the working folder moves there."""
    if rows is not None:
        text = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        (folder / "sweep.jsonl").write_bytes(text)
    (folder / "config.toml").write_text(config, encoding="utf-8")
    return folder / "config.toml"


def plan_lines(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str], str]:
    monkeypatch.chdir(folder)
    code = main(["plan", "config.toml"])
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


LOCAL = """
[run]
name = "demo"

[sweep]
files = "sweep.jsonl"

[job]
"""


class TestReport:
    def test_a_template_typo_is_reported_once_against_the_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`comand` in a 300-row sweep: two lines about config.toml, then the count line."""
        rows = [{"lr": i / 1000} for i in range(300)]
        write(tmp_path, LOCAL + 'comand = "python train.py --lr {lr}"\n', rows)

        code, lines, out = plan_lines(tmp_path, monkeypatch, capsys)

        assert 2 == code
        assert [
            "config.toml: job.comand: unknown key; allowed: command, cwd, env, timeout_s",
            "config.toml: job.command: is required",
            "300 jobs in run demo (backend local) from config.toml: 2 problems; nothing was sent",
        ] == lines
        assert "" == out

    def test_row_problems_are_grouped_after_their_first_lines(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """300 rows with a bad timeout: three exact lines, one "and N more", the count."""
        rows = [{"t": -i} for i in range(1, 301)]
        write(tmp_path, LOCAL + 'command = "true"\ntimeout_s = "{t}"\n', rows)

        code, lines, _ = plan_lines(tmp_path, monkeypatch, capsys)

        assert 2 == code
        assert [
            "sweep.jsonl:1: job.timeout_s: -1 must be greater than 0",
            "sweep.jsonl:2: job.timeout_s: -2 must be greater than 0",
            "sweep.jsonl:3: job.timeout_s: -3 must be greater than 0",
            "... and 297 more rows like this (job.timeout_s)",
            "300 jobs in run demo (backend local) from config.toml: 300 problems; nothing was sent",
        ] == lines

    def test_kinds_of_problems_are_grouped_apart_and_capped(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each kind of row problem keeps its own lines; past 20 lines the rest are counted."""
        fields = [f"A{i}" for i in range(12)]
        env = ", ".join(f'{f} = "{{{f}}}"' for f in fields)
        rows = [{"i": i, **{f: [1] for f in fields}} for i in range(5)]
        write(tmp_path, LOCAL + f'command = "true"\nenv = {{{env}}}\n', rows)

        code, lines, _ = plan_lines(tmp_path, monkeypatch, capsys)

        assert 2 == code
        assert "sweep.jsonl:1: job.env.A0: values are strings, numbers or booleans" == lines[0]
        assert "... and 2 more rows like this (job.env.A0)" == lines[3]
        assert "sweep.jsonl:1: job.env.A1: values are strings, numbers or booleans" == lines[4]
        assert "... and 35 more problems" == lines[-2]  # 60 in all; 20 lines report 25
        assert lines[-1].endswith(": 60 problems; nothing was sent")

    def test_bulk_run_reports_the_same_and_sends_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`bulk run` refuses with the same report: nothing sent, no journal left."""
        rows = [{"lr": i} for i in range(10)]
        write(tmp_path, LOCAL + 'comand = "echo {lr}"\n', rows)
        monkeypatch.chdir(tmp_path)

        code = main(["run", "config.toml"])
        lines = capsys.readouterr().err.splitlines()

        assert 2 == code
        assert (
            "config.toml: job.comand: unknown key; allowed: command, cwd, env, timeout_s"
            == (lines[0])
        )
        assert lines[-1].endswith(
            "10 jobs in run demo (backend local) from config.toml: 2 problems; nothing was sent"
        )
        assert not (tmp_path / ".bulk" / "demo" / "journal.sqlite").exists()
        assert not (tmp_path / ".bulk" / "demo" / "logs").exists()

    def test_a_number_json_cannot_carry_is_caught_by_plan(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """What the engine would fail to serialise is refused with the config, once, by path."""
        config = """
[run]
name = "demo"

[sweep]
grid.a = [1, 2]

[backend]
kind = "stub"
url = "http://127.0.0.1:9"

[job]
a = "{a}"
n = 99999999999999999999
"""
        write(tmp_path, config)

        code, lines, _ = plan_lines(tmp_path, monkeypatch, capsys)

        assert 2 == code
        expected = (
            "config.toml: job.n: 99999999999999999999 does not fit in 64 bits; JSON integers "
            "are 64-bit (quote it to keep it as text)"
        )
        assert [expected] == lines


class TestTemplateOrRow:
    """Only a problem that no row's values can change is blamed on the template."""

    SOURCE: Mapping[str, Any] = {
        "command": "echo {x}",
        "cwd": "work",
        "env": {"A": "{a}", "B": "1"},
        "resources": "{res}",
        "support": {"timeout_sec": "{t}", "estimated_exec_sec": 10},
        "list": ["x", "{y}"],
        "sub_type": "Spot",
    }

    @pytest.mark.parametrize(
        ("problem", "static"),
        [
            pytest.param(Problem("job.comand", "unknown key", key=True), True, id="absent-key"),
            pytest.param(Problem("job.command", "bad", key=True), True, id="literal-key"),
            pytest.param(Problem("job.command", "bad"), False, id="placeholder-value"),
            pytest.param(Problem("job.cwd", "bad"), True, id="constant-value"),
            pytest.param(Problem("job.timeout_s", "is required"), True, id="missing-key"),
            pytest.param(Problem("job.env.B", "bad"), True, id="constant-in-table"),
            pytest.param(Problem("job.env", "bad"), False, id="table-with-placeholder"),
            pytest.param(Problem("job.resources[0].mark", "is required"), False, id="under-var"),
            pytest.param(Problem("job.list[0]", "bad"), True, id="constant-item"),
            pytest.param(Problem("job.list[1]", "bad"), False, id="placeholder-item"),
            pytest.param(
                Problem(
                    "job.support.estimated_exec_sec",
                    "must be below timeout_sec",
                    depends=("job.support.timeout_sec",),
                ),
                False,
                id="depends-on-a-placeholder",
            ),
            pytest.param(
                Problem("job.support.estimated_exec_sec", "bad", depends=("job.sub_type",)),
                True,
                id="depends-on-a-constant",
            ),
        ],
    )
    def test_static_fields(self, problem: Problem, static: bool) -> None:
        """Constant or absent in the template: static; at, in or under a placeholder: not."""
        assert static == plan._StaticFields(self.SOURCE)(problem)

    def test_gongji_spot_rule_follows_a_variable_sub_type(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """ "estimated_exec_sec is required" depends on the row's sub_type: reported per row."""
        config = tmp_path / "config.toml"
        text = (Path(__file__).parent / "corpus" / "gongji_spot" / "config.toml").read_text(
            encoding="utf-8"
        )
        text = text.replace('sub_type = "Spot"', 'sub_type = "{st}"').replace(
            "grid.gpus = [1, 2]", 'grid.gpus = [1, 2]\ngrid.st = ["Spot"]'
        )
        config.write_text(text, encoding="utf-8")

        code, lines, _ = plan_lines(tmp_path, monkeypatch, capsys)

        assert 2 == code
        assert "config.toml: sweep: job.job_support.estimated_exec_sec: is required" == lines[0]


class CountingMapping(Mapping[str, Any]):
    """A huge mapping that counts the items anyone reads from it."""

    def __init__(self, size: int):
        self.size = size
        self.read = 0

    def __getitem__(self, key: str) -> Any:
        self.read += 1
        return "v" * 1000

    def __iter__(self) -> Iterator[str]:
        for i in range(self.size):
            self.read += 1
            yield f"k{i}"

    def __len__(self) -> int:
        return self.size


class TestPreview:
    def test_preview_reads_only_what_it_shows(self) -> None:
        """A preview of 10⁹ items of 1 KB reads a handful of them, and is cut with …."""
        huge = CountingMapping(10**9)

        text = plan.preview({"a": huge, "s": "x" * 50_000_000})

        assert 120 == len(text)
        assert text.startswith('{"a":{"k0":"vvv')
        assert text.endswith("…")
        assert huge.read < 10

    def test_short_values_are_shown_whole(self) -> None:
        """Under the limit a preview is the compact JSON itself."""
        value = {"a": [1, 2.5, None, True], "b": 'q"\n\x00'}

        assert orjson.dumps(value).decode() == plan.preview(value)

    def test_message_values_are_cut(self) -> None:
        """Values quoted in messages are cut too (a 50 MB cell gives a short line)."""
        assert "'xxx" == short_repr("x" * 50_000_000)[:4]
        assert len(short_repr("x" * 50_000_000)) < 70
        assert "an integer of 16610 bits" == short_repr(10**5000)

    def test_plan_of_a_10_mb_body_shows_a_bounded_table(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A 10 MB rendered body is previewed cut: the output is small (and quick)."""
        fields = "\n".join(f'f{i} = "{{v}}"' for i in range(100))
        config = f"""
[run]
name = "demo"

[sweep]
files = "sweep.jsonl"

[backend]
kind = "stub"
url = "http://127.0.0.1:9"

[job]
{fields}
"""
        write(tmp_path, config, [{"v": "x" * 100_000}])

        code, _, out = plan_lines(tmp_path, monkeypatch, capsys)

        assert 0 == code
        assert out.startswith("1 jobs in run demo (backend stub)")
        assert "…" in out
        assert len(out) < 10_000

    def test_values_are_shown_as_text_not_markup(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A value like "[/b]" or "[red]" is printed as it is (it is not rich markup)."""
        write(tmp_path, LOCAL + 'command = ["echo", "{s}"]\n', [{"s": "[/b]"}, {"s": "[red]x"}])

        code, _, out = plan_lines(tmp_path, monkeypatch, capsys)

        assert 0 == code
        assert '"[/b]"' in out
        assert '"[red]x"' in out

    def test_status_shows_errors_as_text_not_markup(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A failure reason quoting "[/x]" is printed by `bulk status` as it is."""
        write(tmp_path, LOCAL + 'command = ["{p}"]\n', [{"p": "[/x]"}])
        monkeypatch.chdir(tmp_path)
        assert 1 == main(["run", "config.toml", "--progress-interval", "60"])
        capsys.readouterr()

        code = main(["status", "config.toml"])
        out = capsys.readouterr().out

        assert 0 == code
        assert "cannot start '[/x]'" in out

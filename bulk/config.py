"""Load a run's TOML config into frozen dataclasses.

A config has these tables; every one but ``[run]`` and ``[job]`` may be left out::

    [run]      name, dir
    [sweep]    files, strings, max_jobs, allow_duplicates, grid, zip, random
    [backend]  kind plus the backend's own keys (credentials by reference only)
    [limits]   request rates per endpoint, requests in flight, active jobs
    [retry]    attempts, total budget, back-off
    [track]    polling back-off, client-side job timeout
    [job]      the request body template (or ``template_file``)

Unknown keys, wrong types and missing required keys raise :class:`ConfigError` naming the file,
the key path and what is allowed. Relative paths resolve against the config file's folder.
This module reads files and never awaits.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import orjson

from bulk import spec
from bulk.errors import ConfigError

if TYPE_CHECKING:
    from bulk.backends.base import BackendKind

__all__ = [
    "BackendConfig",
    "Config",
    "Distribution",
    "LimitsConfig",
    "RetryConfig",
    "RunConfig",
    "SweepConfig",
    "Table",
    "TrackConfig",
    "fingerprint_of",
    "load",
]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_VAR_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Keys that would hold a secret inline. Each backend reads its secrets by reference instead
# (``token_env``, ``private_key_file``); these names are refused wherever they appear in
# ``[backend]`` so a pasted token never reaches the journal, a log or an error message.
_INLINE_SECRET_KEYS = frozenset(
    {"token", "private_key", "password", "secret", "api_key", "key", "auth", "authorization"}
)
DEFAULT_MAX_JOBS = 100_000


@dataclass(frozen=True, slots=True)
class RunConfig:
    """``[run]``: the run's name (part of every job's name) and the folder of its files."""

    name: str
    dir: Path


@dataclass(frozen=True, slots=True)
class Distribution:
    """One ``[sweep.random.params]`` entry.

    Attributes:
        kind: ``uniform``, ``loguniform``, ``randint`` (inclusive) or ``choice``.
        args: ``(low, high)`` for the numeric kinds, the options for ``choice``.
    """

    kind: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """``[sweep]``: where rows come from and how they are expanded.

    Attributes:
        files: CSV/JSONL sources (optionally ``.gz``), read in order; empty for a pure grid.
        strings: CSV columns kept as strings instead of being typed.
        grid: axes of the cartesian product, in declaration order.
        zip: lists advanced in lockstep (equal lengths).
        random_samples: how many random points to draw (0: no random axis).
        random_seed: the seed that makes random draws identical across reruns.
        random_params: the distributions drawn from, in declaration order.
        max_jobs: the guard: a sweep expanding past it is refused.
        allow_duplicates: keep two identical points as two jobs instead of refusing.
    """

    files: tuple[Path, ...] = ()
    strings: frozenset[str] = frozenset()
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    zip: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    random_samples: int = 0
    random_seed: int = 0
    random_params: tuple[tuple[str, Distribution], ...] = ()
    max_jobs: int = DEFAULT_MAX_JOBS
    allow_duplicates: bool = False


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """``[backend]``: which service, and its options as its backend parsed them."""

    kind: str
    options: Any  # the backend kind's own frozen options object


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """``[limits]``: politeness. Rates are requests per second per endpoint class.

    ``service_rate_per_s`` is a budget shared by every endpoint (every HTTP request counts),
    for services that limit a token across endpoints; None: no such budget.
    """

    submit_rate_per_s: float = 10.0
    status_rate_per_s: float = 5.0
    stop_rate_per_s: float = 5.0
    service_rate_per_s: float | None = None
    burst: int = (
        10  # measured: burst 1 reaches ~95 % of the rate (timer overshoot), 10 reaches 100 %
    )
    max_in_flight: int = 8
    max_active: int = 64

    def over_budget(self) -> list[str]:
        """The endpoint rates above the service-wide budget, which then caps them (a note
        for the user: a faster endpoint needs a bigger budget)."""
        budget = self.service_rate_per_s
        if budget is None:
            return []
        rates = {
            "submit_rate_per_s": self.submit_rate_per_s,
            "status_rate_per_s": self.status_rate_per_s,
            "stop_rate_per_s": self.stop_rate_per_s,
        }
        return [
            f"limits.{key} ({rate:g}/s) is above limits.service_rate_per_s ({budget:g}/s), "
            "which every request counts against: raise service_rate_per_s (0: no shared "
            "budget) to go faster"
            for key, rate in rates.items()
            if rate > budget
        ]


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """``[retry]``: exponential back-off with full jitter, bounded in attempts and in time."""

    attempts: int = 6
    budget_s: float = 600.0
    base_s: float = 0.5
    max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """``[track]``: per-job polling back-off and the client-side job timeout."""

    first_s: float = 1.0
    factor: float = 1.5
    max_s: float = 30.0
    timeout_s: float | None = None
    batch: int = 100


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded run config.

    Attributes:
        path: the config file.
        template: the compiled ``[job]`` request body template.
        template_where: where the template came from, for error messages.
    """

    path: Path
    run: RunConfig
    sweep: SweepConfig
    backend: BackendConfig
    limits: LimitsConfig
    retry: RetryConfig
    track: TrackConfig
    template: spec.Template
    template_where: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def journal_path(self) -> Path:
        """The run's SQLite journal."""
        return self.run.dir / "journal.sqlite"


def fingerprint_of(value: Any) -> str:
    """A short, stable hash of a config value (key order does not matter)."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()[:16]


_T = TypeVar("_T")
_REQUIRED: Any = object()


class Table:
    """Strict reader of one TOML table: typed getters, and unknown keys refused at the end.

    Backends read their own ``[backend]`` keys through it, so their errors look the same.
    """

    def __init__(self, data: Mapping[str, Any], where: str, prefix: str):
        self.data = data
        self.where = where
        self.prefix = prefix
        self.known: list[str] = []

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(problem, where=self.where, field=f"{self.prefix}{key}")

    def get(self, key: str, kind: type[_T] | tuple[type, ...], default: Any = _REQUIRED) -> Any:
        self.known.append(key)
        if key not in self.data:
            if default is _REQUIRED:
                self.fail(key, "missing required key")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; TOML's true is not a number in a config.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            names = " or ".join(_type_name(k) for k in kinds)
            self.fail(key, f"expected {names}, got {_type_name(type(value))} {value!r}")
        return value

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value is not None and not value > 0:
            self.fail(key, f"{value!r} must be greater than 0")
        return value

    def table(self, key: str) -> Table:
        raw = self.get(key, dict, {})
        return Table(raw, self.where, f"{self.prefix}{key}.")

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.known]
        if unknown:
            valid = ", ".join(sorted(self.known))
            self.fail(unknown[0], f"unknown key; valid keys here: {valid}")


def _type_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "an array",
        dict: "a table",
    }.get(kind, kind.__name__)


def load(path: str | Path) -> Config:
    """Read and check a run config.

    Args:
        path: the TOML file.

    Returns:
        The frozen :class:`Config`.

    Raises:
        ConfigError: the file cannot be read or anything in it is wrong.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = "no such file"
        raise ConfigError(msg, where=where) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read: {exc}"
        raise ConfigError(msg, where=where) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"invalid TOML: {exc}"
        raise ConfigError(msg, where=where) from None
    # Not resolved: origins in messages then read as the user wrote them (configs/data.csv).
    base = path.parent

    top = Table(raw, where, "")
    run = _load_run(top.table("run"), base)
    sweep = _load_sweep(top.table("sweep"), base)
    backend, kind = _load_backend(top.table("backend"), base)
    limits = _load_limits(top.table("limits"), kind.default_limits)
    retry = _load_retry(top.table("retry"))
    track = _load_track(top.table("track"), kind.default_track)
    template, template_where = _load_template(top, base)
    top.finish()
    return Config(
        path=path,
        run=run,
        sweep=sweep,
        backend=backend,
        limits=limits,
        retry=retry,
        track=track,
        template=template,
        template_where=template_where,
        raw=raw,
    )


def _load_run(t: Table, base: Path) -> RunConfig:
    if not t.data:
        t.fail("name", "missing required key (the [run] table needs a name)")
    name = t.get("name", str)
    if not _NAME_RE.match(name):
        t.fail(
            "name",
            f"{name!r} is not a valid run name; use 1-40 lower-case letters, digits and '-', "
            "starting with a letter or digit",
        )
    run_dir = t.get("dir", str, None)
    t.finish()
    folder = base / run_dir if run_dir else base / ".bulk" / name
    return RunConfig(name=name, dir=folder)


def _load_sweep(t: Table, base: Path) -> SweepConfig:
    files = t.get("files", (str, list), [])
    if isinstance(files, str):
        files = [files]
    if not all(isinstance(f, str) for f in files):
        t.fail("files", "expected a file name or an array of file names")
    strings = t.get("strings", list, [])
    max_jobs = t.positive("max_jobs", int, DEFAULT_MAX_JOBS)
    allow_duplicates = t.get("allow_duplicates", bool, False)
    grid = _axes(t.table("grid"))
    zipped = _axes(t.table("zip"))
    if zipped:
        lengths = {name: len(values) for name, values in zipped}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n} has {k}" for n, k in lengths.items())
            t.fail("zip", f"lists must have equal lengths; {shown}")
    rt = t.table("random")
    samples = rt.get("samples", int, 0)
    if samples < 0:
        rt.fail("samples", f"{samples} must be 0 or more")
    seed = rt.get("seed", int, 0)
    params = _distributions(rt.table("params"))
    rt.finish()
    if samples and not params:
        rt.fail("params", "random.samples is set but no random.params are declared")
    t.finish()

    names: dict[str, str] = {}
    for axis, entries in (("grid", grid), ("zip", zipped), ("random.params", params)):
        for name, _ in entries:
            if name in names:
                t.fail(f"{axis}.{name}", f"variable is already declared in sweep.{names[name]}")
            names[name] = axis
    if not files and not grid and not zipped and not samples:
        t.fail("files", "the sweep is empty; give files, grid, zip or random")
    return SweepConfig(
        files=tuple(base / f for f in files),
        strings=frozenset(strings),
        grid=grid,
        zip=zipped,
        random_samples=samples if params else 0,
        random_seed=seed,
        random_params=params,
        max_jobs=max_jobs,
        allow_duplicates=allow_duplicates,
    )


def _axes(t: Table) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    axes = []
    for name in list(t.data):
        if not _VAR_RE.match(name):
            t.fail(name, "variable names are letters, digits and '_', starting with a letter")
        value = t.get(name, (list, dict))
        values = _range(t, name, value) if isinstance(value, dict) else tuple(value)
        if not values:
            t.fail(name, "an axis needs at least one value")
        if len({orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in values}) < len(values):
            t.fail(name, "an axis repeats a value, which would make identical jobs")
        axes.append((name, values))
    return tuple(axes)


def _range(t: Table, name: str, spec_: Mapping[str, Any]) -> tuple[Any, ...]:
    """``{range = [start, stop, step]}`` (stop excluded) or ``{linspace = [a, b, n]}``."""
    allowed = "use {range = [start, stop, step]} or {linspace = [first, last, count]}"
    if len(spec_) != 1:
        t.fail(name, f"a numeric range has exactly one key; {allowed}")
    ((kind, args),) = spec_.items()
    if kind not in ("range", "linspace") or not isinstance(args, list):
        t.fail(name, f"unknown range {kind!r}; {allowed}")
    if not all(isinstance(a, int | float) and not isinstance(a, bool) for a in args):
        t.fail(name, f"{kind} takes numbers; {allowed}")
    if kind == "range":
        if len(args) not in (2, 3):
            t.fail(name, "range takes [start, stop] or [start, stop, step]")
        start, stop, step = (*args, 1) if len(args) == 2 else args
        if step == 0:
            t.fail(name, "range step must not be 0")
        count = max(0, math.ceil((stop - start) / step - 1e-9))
        if count > DEFAULT_MAX_JOBS * 100:
            t.fail(name, f"range has {count} values, too many for an axis")
        if all(isinstance(a, int) for a in (start, stop, step)):
            return tuple(range(start, stop, step))
        return tuple(_round(start + i * step) for i in range(count))
    if len(args) != 3 or not isinstance(args[2], int) or args[2] < 1:
        t.fail(name, "linspace takes [first, last, count] with an integer count >= 1")
    first, last, n = args
    if n == 1:
        return (first,)
    return tuple(_round(first + (last - first) * i / (n - 1)) for i in range(n))


def _round(x: float) -> float:
    # 0.1 * 3 is 0.30000000000000004; 12 significant digits keep sweeps readable and stable.
    return float(f"{x:.12g}")


_DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "randint": 2, "choice": -1}


def _distributions(t: Table) -> tuple[tuple[str, Distribution], ...]:
    allowed = (
        "uniform = [low, high], loguniform = [low, high], randint = [low, high], choice = [...]"
    )
    out = []
    for name in list(t.data):
        if not _VAR_RE.match(name):
            t.fail(name, "variable names are letters, digits and '_', starting with a letter")
        value = t.get(name, dict)
        if len(value) != 1:
            t.fail(name, f"give exactly one distribution; one of {allowed}")
        ((kind, args),) = value.items()
        if kind not in _DISTRIBUTIONS or not isinstance(args, list):
            t.fail(name, f"unknown distribution {kind!r}; one of {allowed}")
        if kind == "choice":
            if not args:
                t.fail(name, "choice needs at least one option")
        else:
            nums = all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
            if len(args) != 2 or not nums or not args[0] < args[1]:
                t.fail(name, f"{kind} takes [low, high] with low < high")
            if kind == "loguniform" and args[0] <= 0:
                t.fail(name, "loguniform needs low > 0")
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                t.fail(name, "randint takes integer bounds")
        out.append((name, Distribution(kind, tuple(args))))
    return tuple(out)


def _load_backend(t: Table, base: Path) -> tuple[BackendConfig, BackendKind]:
    from bulk.backends import get_kind  # the registry imports backends, which import nothing here

    for key in t.data:
        if key.lower() in _INLINE_SECRET_KEYS:
            t.fail(
                key,
                "secrets are never written in a config; reference them instead "
                f'({key}_env = "ENV_VAR" or {key}_file = "path")',
            )
    kind_name = t.get("kind", str, "local")
    try:
        kind = get_kind(kind_name)
    except KeyError as exc:
        t.fail("kind", str(exc.args[0]))
    options = kind.parse_options(t, base)
    t.finish()
    return BackendConfig(kind=kind_name, options=options), kind


def _load_limits(t: Table, d: LimitsConfig) -> LimitsConfig:
    out = LimitsConfig(
        submit_rate_per_s=_rate(t, "submit_rate_per_s", d.submit_rate_per_s),
        status_rate_per_s=_rate(t, "status_rate_per_s", d.status_rate_per_s),
        stop_rate_per_s=_rate(t, "stop_rate_per_s", d.stop_rate_per_s),
        service_rate_per_s=_service_rate(t, d.service_rate_per_s),
        burst=t.positive("burst", int, d.burst),
        max_in_flight=t.positive("max_in_flight", int, d.max_in_flight),
        max_active=t.positive("max_active", int, d.max_active),
    )
    t.finish()
    return out


def _rate(t: Table, key: str, default: float) -> float:
    """A request rate: above 0 and finite (``inf`` would make the limiter divide by zero)."""
    value: float = t.positive(key, float, default)
    if not math.isfinite(value):
        t.fail(key, f"{value!r} must be a finite number of requests per second")
    return value


def _service_rate(t: Table, default: float | None) -> float | None:
    """``service_rate_per_s``: a positive rate, or 0 for no service-wide budget."""
    value = t.get("service_rate_per_s", float, default)
    if value is None:
        return None
    if not (value >= 0 and math.isfinite(value)):
        t.fail(
            "service_rate_per_s",
            f"{value!r} must be a rate above 0 (requests per second), or 0 for no shared budget",
        )
    return value or None


def _load_retry(t: Table) -> RetryConfig:
    d = RetryConfig()
    out = RetryConfig(
        attempts=t.positive("attempts", int, d.attempts),
        budget_s=t.positive("budget_s", float, d.budget_s),
        base_s=t.positive("base_s", float, d.base_s),
        max_s=t.positive("max_s", float, d.max_s),
    )
    t.finish()
    return out


def _load_track(t: Table, d: TrackConfig) -> TrackConfig:
    factor = t.get("factor", float, d.factor)
    if factor < 1:
        t.fail("factor", f"{factor} must be 1 or more")
    out = TrackConfig(
        first_s=t.positive("first_s", float, d.first_s),
        factor=factor,
        max_s=t.positive("max_s", float, d.max_s),
        timeout_s=t.positive("timeout_s", float, None),
        batch=t.positive("batch", int, d.batch),
    )
    t.finish()
    return out


def _load_template(top: Table, base: Path) -> tuple[spec.Template, str]:
    job = top.get("job", dict)
    where = top.where
    if "template_file" in job:
        if len(job) != 1:
            top.fail("job", "template_file must be the only key of [job] when it is used")
        name = job["template_file"]
        if not isinstance(name, str):
            top.fail("job.template_file", "expected a file name")
        file = base / name
        where = str(file)
        try:
            text = file.read_text(encoding="utf-8")
            body = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except FileNotFoundError:
            top.fail("job.template_file", f"{str(file)!r} does not exist")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            msg = f"cannot read template: {exc}"
            raise ConfigError(msg, where=where) from None
    else:
        body = job
    if not body:
        top.fail("job", "the job template is empty")
    try:
        return spec.compile_template(body), where
    except ConfigError as exc:
        raise ConfigError(exc.problem, where=where, field=exc.field) from None

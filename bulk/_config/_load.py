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
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

import bulk._template as spec
from bulk._config._read import parse_json, parse_toml, read_text
from bulk._config._sweep import SweepConfig, load_sweep
from bulk._policy import LimitsConfig, Policy, RetryConfig, TrackConfig
from bulk._table import Table
from bulk.backends import AnyKind, get_kind
from bulk.errors import ConfigError

__all__ = ["BackendConfig", "Config", "RunConfig", "fingerprint_of", "load"]

# Patterns validate with fullmatch, never match + "$": "$" also matches before a final "\n",
# which let a run name "abc\n" through into directory and job names.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
# Keys that would hold a secret inline. Each backend reads its secrets by reference instead
# (``token_env``, ``private_key_file``); these names are refused wherever they appear in
# ``[backend]`` so a pasted token never reaches the journal, a log or an error message.
_INLINE_SECRET_KEYS = frozenset(
    {"token", "private_key", "password", "secret", "api_key", "key", "auth", "authorization"}
)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """``[run]``: the run's name (part of every job's name) and the folder of its files."""

    name: str
    dir: Path


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """``[backend]``: which service, and its options as its backend parsed them."""

    kind: str
    options: Any  # the backend kind's own frozen options object


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

    @property
    def policy(self) -> Policy:
        """The run's limits, retry and tracking policy, as the engine takes it."""
        return Policy(self.limits, self.retry, self.track)


def fingerprint_of(value: Any) -> str:
    """A short, stable hash of a config value (key order does not matter)."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()[:16]


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
        text = read_text(path)
    except FileNotFoundError:
        msg = "no such file"
        raise ConfigError(msg, where=where) from None
    except OSError as exc:
        msg = f"cannot read: {exc}"
        raise ConfigError(msg, where=where) from None
    raw = parse_toml(text, where)
    # Not resolved: origins in messages then read as the user wrote them (configs/data.csv).
    base = path.parent

    top = Table(raw, where, "")
    run = _load_run(top.table("run"), base)
    sweep = load_sweep(top.table("sweep"), base)
    backend, kind = _load_backend(top.table("backend"), base)
    # A kind whose service restricts ids may refuse a run name its job names cannot fit.
    name_rule = getattr(kind, "run_name_problem", None)
    problem = name_rule(run.name) if name_rule is not None else None
    if problem:
        raise ConfigError(problem, where=where, field="run.name")
    limits = _load_limits(top.table("limits"), kind.default_limits)
    retry = _load_retry(top.table("retry"))
    track = _load_track(top.table("track"), kind.default_track)
    template, template_where = _load_template(top, base, kind.quoted_fields)
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
    if not _NAME_RE.fullmatch(name):
        t.fail(
            "name",
            f"{name!r} is not a valid run name; use 1-40 lower-case letters, digits and '-', "
            "starting with a letter or digit",
        )
    run_dir = t.get("dir", str, None)
    t.finish()
    folder = base / run_dir if run_dir else base / ".bulk" / name
    return RunConfig(name=name, dir=folder)


def _load_backend(t: Table, base: Path) -> tuple[BackendConfig, AnyKind]:

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


def _load_template(
    top: Table, base: Path, quoted: Mapping[str, Callable[[str], str]]
) -> tuple[spec.Template, str]:
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
            text = read_text(file)
        except FileNotFoundError:
            top.fail("job.template_file", f"{str(file)!r} does not exist")
        except OSError as exc:
            msg = f"cannot read template: {exc}"
            raise ConfigError(msg, where=where) from None
        body = parse_json(text, where) if file.suffix == ".json" else parse_toml(text, where)
    else:
        body = job
    if not body:
        top.fail("job", "the job template is empty")
    try:
        return spec.compile_template(body, quoted), where
    except ConfigError as exc:
        raise ConfigError(exc.problem, where=where, field=exc.field) from None

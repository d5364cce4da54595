"""The one small interface between the engine and a batch-job service.

Vocabulary:

- a *job* is one unit of work on the service, made from one sweep point;
- its *name* is deterministic (``<run>-<key>``, plus ``-<attempt>`` after a retry) and is how
  bulk finds the job again after a crash: the service's submission id, task name or app id;
- its *remote id* is whatever handle the service gave back (often the same as the name);
- a *receipt* ties the two together once the service has accepted the job.

A backend *kind* (:class:`BackendKind`) is what the config names: it parses ``[backend]``,
checks rendered bodies before anything is sent, and creates the live :class:`Backend`.
Backends raise only :mod:`bulk.errors` types; the engine never asks which backend it has.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    import argparse

    from aiohttp import web
    from rich.console import RenderableType

    from bulk._policy import LimitsConfig, TrackConfig
    from bulk._problems import Problems
    from bulk._table import Table
    from bulk._template import Template

__all__ = [
    "NO_QUOTING",
    "AnyKind",
    "Backend",
    "BackendKind",
    "Command",
    "Endpoint",
    "JobStatus",
    "Phase",
    "Receipt",
    "Send",
    "Simulator",
    "Submission",
    "Testbed",
    "body_validator",
]

_T = TypeVar("_T")
OptionsT = TypeVar("OptionsT")

Endpoint = Literal["submit", "status", "stop", "lookup"]
"""The classes of request bulk paces and counts apart (look-ups share status's rate)."""


@dataclass(frozen=True, slots=True)
class Submission:
    """A rendered job, ready to send.

    Attributes:
        name: the deterministic job name (submission id / task name).
        body: the rendered request body, compact JSON.
        rendered: the same body as the template rendered it (Python objects), where the
            engine has it (None elsewhere, e.g. a ``bulk stop`` look-up): a backend that
            needs one field of the body (Gongji's ``task_name``) reads it here rather than
            parsing ``body`` again. ``body`` is its JSON, always. Read it, never change it:
            parts of it are the template's own constants, shared by every job.
    """

    name: str
    body: bytes
    rendered: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The service accepted job ``name`` and calls it ``remote_id``."""

    name: str
    remote_id: str


class Phase(enum.StrEnum):
    """Where a job is on the service, as far as the backend can tell."""

    QUEUED = "queued"  # accepted, not yet running
    RUNNING = "running"  # started
    SUCCEEDED = "succeeded"  # ended well (terminal)
    FAILED = "failed"  # ended badly (terminal)
    STOPPED = "stopped"  # stopped by a user or by bulk (terminal)
    MISSING = "missing"  # the service does not know this job (any more)

    @property
    def terminal(self) -> bool:
        """Whether the job will not change any more."""
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.STOPPED)


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One job's state on the service.

    Attributes:
        phase: the mapped state.
        reason: why it failed or stopped (an exit code, the service's message), if known.
    """

    phase: Phase
    reason: str | None = None


class Backend(Protocol):
    """A live connection to one service for one run. Close it with ``aclose()``.

    Two methods are optional, looked for by name: ``async delete_ended(job: Receipt)``, which
    drops an ended job from the service (Ray's ``delete_finished``) and which the engine calls
    only once the job's end is committed to the journal; and ``async logs(job: Receipt) ->
    bytes``, the job's output for ``bulk logs``.
    """

    async def submit(self, submission: Submission) -> Receipt:
        """Send one job. A "this name already exists" answer is a success (return its receipt).

        Raises:
            ThrottledError: the service asked to slow down.
            AmbiguousBackendError: the request may have been applied; look the name up first.
            TransientBackendError: nothing happened; retry later.
            PermanentBackendError: the service refused this job.
        """
        ...

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        """The state of many jobs, keyed by remote id; batched where the service can list.

        A job absent from the answer is unchanged as far as the caller knows.
        """
        ...

    async def stop(self, job: Receipt) -> None:
        """Stop one job; stopping a job that has already ended is not an error."""
        ...

    async def lookup(self, submission: Submission) -> Receipt | None:
        """Find the job ``submission`` would create, if it exists (reconciling a submit).

        It gets the whole submission: a service may name jobs by a field of the body (the
        Gongji ``task_name``) rather than by bulk's name.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and processes."""
        ...


class Send(Protocol):
    """Sends one request through the run's gateway: paced under the endpoint's adaptive rate
    and ceiling, capped in flight, counted in the metrics, retried with back-off
    (``Retry-After`` wins) within the retry policy. The engine's requests and a backend's
    one-off commands (``bulk gongji resources``) all go this way.
    """

    async def __call__(
        self, endpoint: Endpoint, call: Callable[..., Awaitable[_T]], *args: Any
    ) -> _T: ...


@dataclass(frozen=True, slots=True)
class Testbed:
    """A backend connected to a private instance of its service, for the contract suite.

    Attributes:
        backend: the live backend (its simulator on loopback, a temporary folder, ...).
        body: the create body of a job: ``body(name, long)``; a ``long`` job runs until it
            is stopped (for a while, at least), any other ends soon and succeeds.
        garble: sets the share of the service's successful answers replaced by garbage
            (the request took effect, the answer cannot be read); None where the service
            is not reached over the wire.
    """

    backend: Backend
    body: Callable[[str, bool], bytes]
    garble: Callable[[float], None] | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """``bulk KIND NAME CONFIG [options]``: a kind's own one-off command (``bulk gongji
    resources``), on a run config of that kind.

    The CLI loads the config, refuses one of another kind, creates the backend and closes it
    after :attr:`run`; everything the command sends goes through ``send`` (the gateway).

    Attributes:
        name: the subcommand's name.
        help: one line for ``bulk KIND --help``.
        arguments: adds the command's options to its parser (``config`` is already there).
        run: does the work in the event loop and returns what to print on stdout: bytes as
            they are, or anything rich prints (a table).
    """

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Backend, argparse.Namespace, Send], Awaitable[bytes | RenderableType]]


class Simulator(Protocol):
    """``bulk sim KIND``: a simulator of the kind's service, served by the CLI on 127.0.0.1."""

    help: str  # one line for ``bulk sim --help``

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the simulator's options (``--host`` and ``--port`` are already there)."""
        ...

    def app(self, args: argparse.Namespace) -> web.Application:
        """The simulator, configured from ``args``.

        Raises:
            ConfigError: an option is wrong beyond what argparse checks (a key file).
        """
        ...


# A kind's ``quoted_fields`` when no field of its bodies is ever parsed by a shell.
NO_QUOTING: Mapping[str, Callable[[str], str]] = MappingProxyType({})


class BackendKind(Protocol[OptionsT]):
    """What ``[backend] kind = ...`` names: options, body schema and a factory.

    ``OptionsT`` is the kind's own frozen options type: what :meth:`parse_options` returns is
    what :meth:`create` takes. The registry hands kinds out as ``BackendKind[Any]`` (one
    table holds kinds of different options), so the pair travels together: a config's
    options are only ever given back to the kind that parsed them.

    Optional: ``run_name_problem(run: str) -> str | None``, why a run name cannot make
    valid job names on the service (too long, a forbidden word), checked when the config
    is loaded (``run.name``); a kind without it accepts every run name.
    """

    name: str
    default_limits: LimitsConfig  # what [limits] falls back to for this service
    default_track: TrackConfig  # what [track] falls back to (polling cadence)
    # Template fields whose substituted values are escaped, and how (``job.command`` ->
    # shlex.quote for the local backend's shell strings); see bulk._template.
    quoted_fields: Mapping[str, Callable[[str], str]]
    # Whether accepted jobs go on running when bulk stops (a service's do; local processes
    # are ended with the backend, so the engine records them pending again).
    jobs_outlive_bulk: bool
    # Whether the service refuses (or answers "already exists" to) a second job of a name it
    # has: then sending a job twice cannot create it twice. False makes a resume look up
    # pending rows the journal may have lost track of before sending them (the submitter).
    unique_names: bool

    def parse_options(self, table: Table, base: Path) -> OptionsT:
        """Read this backend's keys from ``[backend]`` (``kind`` is already read)."""
        ...

    def validate(self, body: Any, problems: Problems) -> None:
        """Add every problem of one rendered body to ``problems``; never touch the network."""
        ...

    def check_template(self, template: Template) -> str | None:
        """A problem with the template as a whole (e.g. a name without ``{_key}``), or None."""
        ...

    def create(self, options: OptionsT, *, run: str, run_dir: Path) -> Backend:
        """The live backend for one run."""
        ...

    def testbed(self, folder: Path) -> AbstractAsyncContextManager[Testbed]:
        """A backend on a service of its own (a simulator, files under ``folder``), for
        ``tests/backends/test_contract.py``: every registered kind is run through it.

        Called outside the event loop (it may import its simulator there); the manager it
        returns is entered in the loop, and closes the backend and the service.
        """
        ...

    def commands(self) -> Sequence[Command]:
        """The kind's own subcommands (``bulk KIND NAME``); none is an empty sequence."""
        ...

    def simulator(self) -> Simulator | None:
        """The simulator ``bulk sim KIND`` serves, or None (imported only when asked for)."""
        ...


AnyKind = BackendKind[Any]
"""A kind of options unknown here: what the registry and the CLI hold."""


def body_validator(kind: AnyKind, options: Any) -> Callable[[Any, Problems], None]:
    """The check of one rendered body in a run of ``options``: the kind's optional
    ``validator(options)`` when it has one (checks that need its options, such as Ray's
    ``working_dir`` inside the config's folder, remembered across rows), else ``validate``."""
    make = getattr(kind, "validator", None)
    if make is None:
        return kind.validate
    validate: Callable[[Any, Problems], None] = make(options)
    return validate

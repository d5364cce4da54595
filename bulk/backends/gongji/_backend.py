"""The ``gongji`` backend: 共绩算力 (Gongji) Open API, Job batch tasks.

Facts come from docs/api/gongji.md; where it says a point is unknown,
the safe choice is made and written down here. The package's other modules: ``_codes`` (the
envelope's error codes), ``_signing`` (RSA signatures), ``_schema`` (create body checks),
``_client`` (options, credentials, the HTTP calls).

A job's identity on the service is its ``task_name``. Task names are **not documented as
unique**: the service may well accept a second create with the same name. So exactly-once
rests on bulk alone: ``submitting`` is journaled before every create, and after an ambiguous
create the task is searched for by its exact name (all statuses, all pages) and adopted before
anything is sent again. The template's ``task_name`` must contain ``{_name}`` (or ``{_key}``
and ``{_attempt}``) so that every row and every attempt has a name of its own.

Status mapping: ``job_status.status`` Complete → succeeded, Failed → failed; task ``status``
End (or Paused) otherwise → stopped; Pending/Running → queued/running; any other value is
non-terminal and logged once. Tracking lists the run's unfinished tasks with ``search``
(all pages), looks for tasks that left that list among the newest ended ones (whichever order
the service lists them in: see ``GongjiBackend._ended``), and asks ``detail`` only for the
rest.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from bulk._naming import Point, render_context
from bulk._policy import LimitsConfig, TrackConfig
from bulk._template import compile_template
from bulk._text import excerpt, short_repr
from bulk.backends._http import malformed, url_problem
from bulk.backends.base import (
    NO_QUOTING,
    Backend,
    BackendKind,
    Command,
    JobStatus,
    Phase,
    Receipt,
    Simulator,
    Submission,
    Testbed,
)
from bulk.backends.gongji._client import (
    GongjiClient,
    GongjiOptions,
    digits,
    task_id_of,
)
from bulk.backends.gongji._client import read_options_token as _read_token
from bulk.backends.gongji._client import read_signer as _read_signer
from bulk.backends.gongji._schema import validate_resource as _validate_resource
from bulk.backends.gongji._schema import validate_service as _validate_service
from bulk.backends.gongji._schema import validate_support as _validate_support
from bulk.errors import (
    ConfigError,
    PermanentBackendError,
    RetryableBackendError,
    RunRefusedError,
    ThrottledError,
    UnreachableError,
)

if TYPE_CHECKING:
    from bulk._problems import Problems
    from bulk._table import Table
    from bulk._template import Template

__all__ = ["KIND", "GongjiBackend", "GongjiKind", "find_mark", "map_status"]

ACTIVE = "Pending,Running,Paused"
ALL_STATUSES = "Pending,Running,Paused,End"
_log = logging.getLogger("bulk.gongji")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class GongjiKind:
    """The ``gongji`` backend kind."""

    name = "gongji"
    # No rate limit is documented; a third-party guide polls no faster than every 10 s. The
    # throttle codes (C008, C009) name no endpoint, so the likely shape is one limit per token
    # across all endpoints: a shared budget of 10 requests/s (an assumption, overridable)
    # keeps creates, searches, details and stops together under it.
    default_limits = LimitsConfig(
        submit_rate_per_s=5.0,
        status_rate_per_s=2.0,
        stop_rate_per_s=5.0,
        service_rate_per_s=10.0,
        burst=5,
        max_in_flight=8,
        max_active=100,
    )
    default_track = TrackConfig(first_s=10.0, factor=1.5, max_s=60.0, batch=1000)
    quoted_fields = NO_QUOTING  # bodies are JSON fields, never parsed by a shell here
    jobs_outlive_bulk = True
    # task_name is not documented as unique: a second create with the same name may make a
    # second task (the simulator does so), so a resend is a duplicate.
    unique_names = False

    def parse_options(self, table: Table, base: Path) -> GongjiOptions:
        """Read the ``[backend]`` keys (credentials by reference)."""
        d = GongjiOptions()
        url = table.get("url", str, d.url)
        problem = url_problem(url)
        if problem is not None:
            table.fail("url", problem)
        token_file = table.get("token_file", str, None)
        token_env = table.get("token_env", str, None if token_file else d.token_env)
        if token_file and token_env:
            table.fail("token_env", "give token_env or token_file, not both")
        if token_env is not None and not _ENV.fullmatch(token_env):
            table.fail("token_env", f"{token_env!r} is not an environment variable name")
        key_file = table.get("private_key_file", str, None)
        key_env = table.get("private_key_env", str, None)
        if key_file and key_env:
            table.fail("private_key_env", "give private_key_file or private_key_env, not both")
        sign_threads = table.get("sign_threads", int, d.sign_threads)
        if sign_threads < 0:
            table.fail("sign_threads", f"{sign_threads} must be 0 (sign inline) or more")
        return GongjiOptions(
            url=url,
            token_env=token_env,
            token_file=base / token_file if token_file else None,
            private_key_file=base / key_file if key_file else None,
            private_key_env=key_env,
            timeout_s=table.positive("timeout_s", float, d.timeout_s),
            sign_threads=sign_threads,
            verify_tls=table.get("verify_tls", bool, d.verify_tls),
            page_size=table.positive("page_size", int, d.page_size),
        )

    def validate(self, body: Any, problems: Problems) -> None:
        """The create body's required fields (docs/api/gongji.md §2.4); others are allowed."""
        job = problems.table(body, "job")
        if job is None:
            return
        problems.string(job, "task_name", "job", max_len=128)
        sub_type = job.get("sub_type")
        if sub_type not in (None, "Spot"):
            problems.add(
                "job.sub_type", f"{short_repr(sub_type)} is not allowed; null (OnDemand) or 'Spot'"
            )
        problems.number(job, "points", "job", integer=True, minimum=1)
        resources = problems.kind(job, "resources", "job", (list,))
        if resources is not None and not resources:
            problems.add("job.resources", "needs at least one resource")
        for i, res in enumerate(resources or []):
            _validate_resource(res, f"job.resources[{i}]", problems)
        support = problems.kind(job, "job_support", "job", (dict,))
        if support is not None:
            _validate_support(support, sub_type, problems)
        services = problems.kind(job, "services", "job", (list,))
        if services is not None and not services:
            problems.add("job.services", "needs at least one service (container)")
        for i, svc in enumerate(services or []):
            _validate_service(svc, f"job.services[{i}]", problems)

    def check_template(self, template: Template) -> str | None:
        """``task_name`` must name each row and attempt apart (see the module docstring)."""
        source = template.source if isinstance(template.source, dict) else {}
        name = source.get("task_name")
        if not isinstance(name, str):
            return None  # validate() reports a missing task_name per row
        if _names_apart(name):
            return None
        return (
            f"task_name {name!r} must contain {{_name}} (or both {{_key}} and {{_attempt}}): "
            "bulk finds a task again by its exact name after a crash, and every row and "
            "retry needs a name of its own"
        )

    def create(self, options: GongjiOptions, *, run: str, run_dir: Path) -> GongjiBackend:
        """A client with the credentials read now (from the environment or files)."""
        token = _read_token(options)
        signer = _read_signer(options)
        client = GongjiClient(options, token=token, signer=signer)
        return GongjiBackend(client, page_size=options.page_size)

    def testbed(self, folder: Path) -> AbstractAsyncContextManager[Testbed]:
        """A backend of ``bulk sim gongji`` served in this process (a simple-mode token)."""
        from aiohttp.test_utils import TestServer

        from bulk._sim.gongji import GongjiSim, SimConfig, make_app, sample_body

        def body(name: str, long: bool) -> bytes:  # the task name is in the body
            return sample_body(f"contract-{name}", run_s=30 if long else None)

        @asynccontextmanager
        async def bed() -> AsyncIterator[Testbed]:
            sim = GongjiSim(SimConfig(pending_s=0.0, run_s=0.0))
            token = "t"  # noqa: S105 - a simple-mode token for a simulator in this process
            sim.add_token(token, None)
            server = TestServer(make_app(sim), host="127.0.0.1")
            await server.start_server()
            url = str(server.make_url("")).rstrip("/")
            client = GongjiClient(GongjiOptions(url=url), token=token, signer=None)
            backend = GongjiBackend(client)

            def garble(rate: float) -> None:
                sim.config = dataclasses.replace(sim.config, garbage_rate=rate)

            try:
                yield Testbed(backend, body, garble=garble)
            finally:
                await backend.aclose()
                await server.close()

        return bed()

    def commands(self) -> Sequence[Command]:
        """``bulk gongji resources``."""
        from bulk.backends.gongji._cli import COMMANDS

        return COMMANDS

    def simulator(self) -> Simulator:
        """``bulk sim gongji``."""
        from bulk._sim.gongji import GongjiSimulator

        return GongjiSimulator()


KIND: BackendKind[GongjiOptions] = GongjiKind()


# The unknown task statuses warned of, once each and at most _MAX_WARNED of them: a service
# that garbles its statuses cannot flood the log.
_warned: set[str] = set()
_MAX_WARNED = 20


def map_status(task: Mapping[str, Any]) -> JobStatus:
    """A task of ``search``/``detail`` as a :class:`JobStatus` (see the module docstring)."""
    job_status = task.get("job_status")
    inner = job_status.get("status") if isinstance(job_status, dict) else None
    outer = task.get("status")
    if inner == "Complete":
        return JobStatus(Phase.SUCCEEDED)
    if inner == "Failed":
        failed = job_status.get("failed_pods") if isinstance(job_status, dict) else None
        return JobStatus(Phase.FAILED, f"job failed (failed_pods={excerpt(failed, 20)})")
    if outer == "End":
        return JobStatus(Phase.STOPPED, f"ended ({excerpt(inner or 'no job status', 40)})")
    if outer == "Paused":
        return JobStatus(Phase.STOPPED, "paused")
    if outer == "Running" or inner == "Running":
        return JobStatus(Phase.RUNNING)
    shown = excerpt(outer, 40)
    if outer != "Pending" and shown not in _warned and len(_warned) < _MAX_WARNED:
        _warned.add(shown)
        _log.warning("unknown task status %r: treated as not finished", shown)
    return JobStatus(Phase.QUEUED)


@dataclass(slots=True)
class _Resources:
    loaded: bool = False
    devices: list[dict[str, Any]] = field(default_factory=list)
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class GongjiBackend:
    """Jobs as Gongji Job tasks. Implements :class:`~bulk.backends.base.Backend`."""

    # Pages of newest ended tasks read to find jobs that left the unfinished list, before
    # falling back to one detail request per job.
    END_PAGES = 3

    def __init__(self, client: GongjiClient, *, page_size: int = 100):
        self.client = client
        self._page_size = page_size
        self._names: dict[str, str] = {}  # remote id -> task_name, for search prefixes
        self._resources = _Resources()
        self._order: str | None = None  # how search lists tasks: "newest"/"oldest" first
        self._end_count: dict[str, int] = {}  # ended tasks per search prefix, last seen

    async def submit(self, submission: Submission) -> Receipt:
        body = submission.body
        if b'"gpu_name"' in body and _needs_marks(_rendered(submission)):
            body = await self._resolve_marks(submission)
        name = _task_name(submission)  # before the create: a body without one is never sent
        task_id = await self.client.create(body, job_name=submission.name)
        receipt = Receipt(submission.name, str(task_id))
        self._names[receipt.remote_id] = name
        return receipt

    async def lookup(self, submission: Submission) -> Receipt | None:
        """Search every status for the exact task_name; the first task created wins."""
        name = _task_name(submission)
        ids = [
            task_id_of(t.get("task_id"))
            for t in await self._search_all(ALL_STATUSES, name)
            if t.get("task_name") == name
        ]
        matches = [task_id for task_id in ids if task_id is not None]
        if len(matches) < len(ids):
            error = malformed(
                "GET",
                "/api/task/job/search",
                "a task of that name has no task_id",
                None,
                idempotent=True,
                job_name=submission.name,
            )
            raise error
        if not matches:
            return None
        receipt = Receipt(submission.name, str(min(matches)))
        self._names[receipt.remote_id] = name
        return receipt

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        wanted = {job.remote_id for job in jobs}
        prefix = _common_prefix(self._names.get(job.remote_id) for job in jobs)
        out: dict[str, JobStatus] = {}
        for task in await self._search_all(ACTIVE, prefix):
            remote_id = str(task.get("task_id"))
            if remote_id in wanted:
                out[remote_id] = map_status(task)
        if len(out) < len(wanted):
            out.update(await self._ended(wanted - out.keys(), prefix))
        for remote_id in wanted - out.keys():
            if not digits(remote_id):
                continue  # not a task id of this service: never reported at all
            try:
                out[remote_id] = map_status(await self.client.detail(int(remote_id)))
            except (UnreachableError, ThrottledError):
                # The service is down, or asks to slow down: no use asking about the other
                # jobs now. A throttle reaches the engine, which slows the rate and asks
                # about the whole batch again later.
                raise
            except (RetryableBackendError, PermanentBackendError) as exc:
                # Unknown this time: left out, so the engine asks again later. A task the
                # service no longer knows is never reported missing (which would resend it).
                _log.debug("detail %s: %s", remote_id, exc)
        for remote_id, answer in out.items():
            if answer.phase.terminal:  # never polled again: memory stays flat in the run's size
                self._names.pop(remote_id, None)
        return out

    async def _ended(self, missing: set[str], prefix: str) -> dict[str, JobStatus]:
        """Find tasks that left the unfinished list among the ended ones, from the newest.

        The API does not say in which order ``search`` lists tasks. Task ids grow with
        creation, so each page's ids tell: descending, newest first; ascending, oldest first
        (then the newest are on the last page, found from ``count``); neither, unknown (the
        first pages are read). The order seen is kept for the next call. Pages are read from
        the newest end until every task asked for is found, or a page holds a task older
        than all of them (none can be further on), or :attr:`END_PAGES` pages were read:
        ``detail`` asks for the rest.
        """
        found: dict[str, JobStatus] = {}
        targets = {int(r) for r in missing if digits(r)}
        if not targets:
            return found
        size = self._page_size
        known = self._end_count.get(prefix)
        walk = _EndWalk(
            page=-(-known // size) if self._order == "oldest" and known else 1,
            oldest=min(targets),
        )
        while len(walk.visited) < self.END_PAGES:
            count, tasks = await self.client.search(
                status="End", search_value=prefix, page=walk.page, page_size=size
            )
            walk.visited.add(walk.page)
            self._end_count[prefix] = count
            ids = _take_ended(tasks, missing, found, targets)
            if not targets or not tasks:
                break
            order = _list_order(ids)
            if order is not None:
                self._order = order
            if not walk.next_page(self._order, ids, last=max(1, -(-count // size))):
                break
        return found

    async def stop(self, job: Receipt) -> None:
        try:
            await self.client.stop(int(job.remote_id), job_name=job.name)
        except PermanentBackendError as exc:
            if exc.code != "C010":  # C010: the task has already ended
                raise

    async def resources(self) -> list[dict[str, Any]]:
        """The device list (cached for the run)."""
        async with self._resources.lock:
            if not self._resources.loaded:
                self._resources.devices = await self.client.resources()
                self._resources.loaded = True
        return self._resources.devices

    async def _resolve_marks(self, submission: Submission) -> bytes:
        body = orjson.loads(submission.body)  # a copy of its own: its resources are replaced
        devices = await self.resources()
        resolved = []
        for res in body.get("resources") or []:
            if isinstance(res, dict) and "mark" not in res and "gpu_name" in res:
                res = find_mark(
                    devices,
                    res["gpu_name"],
                    res["gpu_count"],
                    res["region"],
                    job_name=submission.name,
                )
            resolved.append(res)
        body["resources"] = resolved
        return orjson.dumps(body)

    async def _search_all(self, status: str, search_value: str) -> list[dict[str, Any]]:
        """Every page of a search, until ``count`` tasks were listed or a page is empty.

        A page whose tasks were all on earlier pages ends it as an unreadable answer: a
        ``count`` the pages do not bear out (a garbled one, or 10¹⁸) would otherwise be
        followed page after page for ever.
        """
        tasks: list[dict[str, Any]] = []
        seen: set[str] = set()
        page = 1
        while True:
            count, results = await self.client.search(
                status=status, search_value=search_value, page=page, page_size=self._page_size
            )
            ids = {str(task.get("task_id")) for task in results}
            if page > 1 and results and ids <= seen:
                what = f"page {page} lists only tasks of earlier pages"
                error = malformed(
                    "GET",
                    "/api/task/job/search",
                    what,
                    {"count": count},
                    idempotent=True,
                    job_name=None,
                )
                raise error
            seen |= ids
            tasks.extend(results)
            if not results or page * self._page_size >= count:
                return tasks
            page += 1

    async def aclose(self) -> None:
        await self.client.aclose()


def find_mark(
    devices: Sequence[Mapping[str, Any]],
    gpu_name: str,
    gpu_count: int,
    region: str,
    *,
    job_name: str | None = None,
) -> dict[str, Any]:
    """The create ``resources`` entry for a device given by name, count and region.

    Raises:
        RunRefusedError: no such device, or it is sold out (the message lists what is
            available): the run stops until the template or the inventory changes.
    """
    sold_out = False
    for device in devices:
        if device.get("gpu_name") != gpu_name or device.get("gpu_count") != gpu_count:
            continue
        for reg in _regions(device):
            if region not in (reg.get("region"), reg.get("region_name")):
                continue
            if not reg.get("inventory"):
                sold_out = True
                continue
            mark = reg.get("mark")
            if not isinstance(mark, dict) or "resource" not in mark or "mark" not in mark:
                error = malformed(
                    "GET",
                    "/api/deployment/resource/search",
                    f"{gpu_name}×{gpu_count} in {region} has no mark",
                    reg,
                    idempotent=True,
                    job_name=job_name,
                )
                raise error
            return {
                "resource": mark["resource"],
                "region_name": reg.get("region_name"),
                "mark": mark["mark"],
            }
    available = sorted(
        excerpt(f"{d.get('gpu_name')}×{d.get('gpu_count')} in {r.get('region')}", 60)
        for d in devices
        for r in _regions(d)
        if r.get("inventory")
    )
    what = f"{gpu_name}×{gpu_count} in {region}"
    problem = "is sold out (inventory 0)" if sold_out else "is not in the device list"
    msg = f"{what} {problem}; available: {excerpt(', '.join(available) or 'nothing')}"
    raise RunRefusedError(msg, job_name=job_name)


def _regions(device: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A device's regions, skipping anything that is not one (a garbled list)."""
    regions = device.get("regions")
    return [r for r in regions if isinstance(r, dict)] if isinstance(regions, list) else []


def _needs_marks(body: Any) -> bool:
    """Whether a resource is given by name (no mark) and must be resolved."""
    resources = body.get("resources") if isinstance(body, dict) else None
    return any(isinstance(r, dict) and "mark" not in r and "gpu_name" in r for r in resources or [])


class _Probe(dict[str, Any]):
    """A row for probing a template: the names given, 1 for any other variable."""

    def __missing__(self, key: str) -> Any:
        return 1


def _names_apart(task_name: str) -> bool:
    """Whether ``task_name`` renders apart for two rows and for two attempts of one row.

    Rendered, not searched for ``{_name}``: ``"{{_name}}"`` contains that text yet is the
    literal ``{_name}`` for every row, and a format spec can cut a name short. A template
    that cannot be rendered without its row's own values is judged by the placeholders it
    uses (each row is then checked by ``validate``).
    """
    try:
        probe = compile_template(task_name)
    except ConfigError:  # compiling the job template itself says what is wrong
        return True
    rows = [("0123456789abcdef", 1), ("0123456789abcdef", 2), ("fedcba9876543210", 1)]
    try:
        names = {
            probe.render(_Probe(render_context(Point(0, key, "probe", {}), "probe", attempt)))
            for key, attempt in rows
        }
    except ConfigError:
        used = probe.variables
        return "_name" in used or {"_key", "_attempt"} <= used
    return len(names) == len(rows)


def _rendered(submission: Submission) -> Any:
    """The body as Python objects: the engine's rendering where it passed it (no second
    parse of every create's body), else parsed (None if it is not JSON)."""
    if submission.rendered is not None:
        return submission.rendered
    try:
        return orjson.loads(submission.body)
    except orjson.JSONDecodeError:
        return None


def _task_name(submission: Submission) -> str:
    body = _rendered(submission)
    name = body.get("task_name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        msg = "the job body has no task_name"
        raise PermanentBackendError(msg, job_name=submission.name)
    return name


def _take_ended(
    tasks: Sequence[dict[str, Any]],
    missing: set[str],
    found: dict[str, JobStatus],
    targets: set[int],
) -> list[int]:
    """Move the tasks of a page of ended ones that are ``missing`` from ``targets`` into
    ``found``; the page's task ids, in its order."""
    ids: list[int] = []
    for task in tasks:
        remote_id = str(task.get("task_id"))
        if digits(remote_id):
            ids.append(int(remote_id))
        if remote_id in missing:
            found[remote_id] = map_status(task)
            targets.discard(int(remote_id))
    return ids


@dataclass(slots=True)
class _EndWalk:
    """Where :meth:`GongjiBackend._ended` is in the pages of ended tasks.

    Attributes:
        page: the page to read (0: none is left to read).
        oldest: the oldest task id looked for.
        visited: the pages read so far.
        bound: pages beyond it (towards the old end) hold only tasks older than any wanted.
    """

    page: int
    oldest: int
    visited: set[int] = field(default_factory=set)
    bound: int | None = None

    def next_page(self, order: str | None, ids: Sequence[int], *, last: int) -> int:
        """Move on from the page just read (its task ids ``ids``, ``last`` pages in all), in
        the list's ``order``; the page to read next, or 0 if there is none."""
        reached_oldest = min(ids, default=self.oldest) <= self.oldest
        page = self.page
        if order == "newest":
            if reached_oldest:
                self.bound = page if self.bound is None else min(self.bound, page)
            # The first page not read yet (lazily: a garbled count may be 10¹⁸).
            page = next((q for q in range(1, last + 1) if q not in self.visited), 0)
            if self.bound is not None and page >= self.bound:
                page = 0
        elif order == "oldest":
            # Ascending: page 1 (read before the order was known) is the old end.
            if reached_oldest and page != 1:
                self.bound = page if self.bound is None else max(self.bound, page)
            page = next((q for q in range(last, 0, -1) if q not in self.visited), 0)
            if self.bound is not None and page <= self.bound:
                page = 0
        else:  # no order to go by: the first pages, as the newest may be anywhere
            page = page + 1 if page < last else 0
        self.page = page
        return page


def _list_order(ids: Sequence[int]) -> str | None:
    """``newest`` if the ids go down, ``oldest`` if they go up, else None (unknown)."""
    if len(set(ids)) <= 1:
        return None
    if all(a > b for a, b in itertools.pairwise(ids)):
        return "newest"
    if all(a < b for a, b in itertools.pairwise(ids)):
        return "oldest"
    return None


def _common_prefix(names: Iterable[str | None]) -> str:
    """The longest common prefix of the names, or "" when any is unknown."""
    prefix: str | None = None
    for name in names:
        if name is None:
            return ""
        # Character by character is what is wanted here: names, not paths.
        prefix = name if prefix is None else os.path.commonprefix([prefix, name])  # noqa: RUF071
    return prefix or ""


_check: type[Backend] = GongjiBackend

"""Against a real loopback Ray head (``pytest -m ray_head``): the head itself, then bulk's
``ray`` backend end to end.

The head is shared by the session (it takes ~1 GB and several seconds to start); each test
uses job names of its own and leaves no running job behind.
"""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path

import aiohttp
import pytest

from bulk._rayhead import RayHead, _head_pids
from bulk.testing import wait_until

pytestmark = [pytest.mark.ray_head, pytest.mark.timeout(300)]

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


async def test_a_job_sent_with_plain_http_runs_to_its_end(ray_url: str) -> None:
    """The head works through its REST API alone: POST a job, poll it until it ends."""
    sid = f"http-{uuid.uuid4().hex[:8]}"
    body = {"entrypoint": "python -c 'print(6 * 7)'", "submission_id": sid}
    async with aiohttp.ClientSession(ray_url) as http:
        async with http.post("/api/jobs/", json=body) as answer:
            assert answer.status == 200, await answer.text()
            assert (await answer.json())["submission_id"] == sid

        async def status() -> dict[str, object]:
            async with http.get(f"/api/jobs/{sid}") as answer:
                assert answer.status == 200, await answer.text()
                return await answer.json()  # type: ignore[no-any-return]

        job = await wait_until(
            status, lambda j: j["status"] in TERMINAL, what=f"{sid} ends", interval_s=0.25,
            polls=240,
        )  # fmt: skip
        assert job["status"] == "SUCCEEDED", job
        async with http.get(f"/api/jobs/{sid}/logs") as answer:
            assert "42" in (await answer.json())["logs"]
        async with http.delete(f"/api/jobs/{sid}") as answer:
            assert (await answer.json()) == {"deleted": True}


def _listening(pids: set[int]) -> list[str]:
    """``address:port`` of every TCP socket the processes listen on (from /proc)."""
    inodes = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        try:
            links = [str(fd.readlink()) for fd in fds.iterdir()]
        except OSError:  # gone, or not ours to read
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addr, port = fields[1].split(":")
                found.append(f"{_address(addr)}:{int(port, 16)}")
    return found


def _address(hex_addr: str) -> str:
    """/proc/net's address: 32-bit words in host (little-endian) order; ``::ffff:a.b.c.d``
    shown as ``a.b.c.d``."""
    raw = b"".join(bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, len(hex_addr), 8))
    ip = ipaddress.ip_address(raw)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def test_every_listener_of_the_head_is_on_loopback(real_ray_head: RayHead) -> None:
    """The recipe's point (api/ray.md §1.2): no port of any head process is reachable from
    outside this machine."""
    listening = _listening(_head_pids(real_ray_head.pid))
    assert any(a.endswith(f":{real_ray_head.url.rsplit(':', 1)[1]}") for a in listening)
    assert listening
    outside = [a for a in listening if not ipaddress.ip_address(a.rsplit(":", 1)[0]).is_loopback]
    assert not outside, f"listening beyond loopback: {outside}"

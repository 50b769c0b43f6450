"""Fault injection: reproducible from the seed, every kind well-formed, no job from a faulted submit."""

from __future__ import annotations

import random

import httpx

from flux_nb.server.faults import choose_fault
from servers import APP


def outcome(client: httpx.Client, method: str, url: str, **kw) -> str:
    try:
        response = client.request(method, url, **kw)
    except httpx.RemoteProtocolError:
        return "drop"
    return str(response.status_code)


#: What an injected fault looks like to a client; the preview engine answers none of these itself.
INJECTED = {"429", "500", "503", "drop"}


def run_sequence(server) -> list[str]:
    """The same fixed sequence of requests: submit once, then GETs of status, result and a file.

    Each outcome is the injected fault, or "app" when the request reached the app: what the app
    answers (202 or 200 for the status, 400 or 200 for the result) depends on when the job
    finishes, which the seed does not decide.
    """
    with httpx.Client(base_url=server.url, timeout=20) as c:
        for _ in range(50):
            response = c.post(f"/{APP}", json={"prompt": "fault test", "seed": 1, "image_size": "square"})
            if response.status_code == 200:
                break
        handle = response.json()
        seen = []
        for i in range(40):
            url = (handle["status_url"], handle["response_url"], "/files/results/none.jpeg")[i % 3]
            got = outcome(c, "GET", url)
            seen.append(got if got in INJECTED else "app")
        return seen


def test_faults_are_reproducible_from_the_seed(live_server):
    first = run_sequence(live_server(fail_rate=0.5, fault_seed=11))
    # a slow job on the second server: whether the job has finished must not matter
    second = run_sequence(live_server(fail_rate=0.5, fault_seed=11, latency=0.3))
    other = run_sequence(live_server(fail_rate=0.5, fault_seed=12))
    assert first == second
    assert first != other
    assert set(first) == INJECTED | {"app"}


def test_choose_fault_is_a_pure_function_of_the_rng():
    draws = [choose_fault(random.Random(3), 0.3, "GET", "status") for _ in range(5)]
    assert len(set(draws)) == 1
    rng = random.Random(5)
    kinds = {choose_fault(rng, 1.0, "POST", "submit") for _ in range(200)}
    assert kinds == {"429", "500", "503"}  # never a dropped connection on a POST
    assert choose_fault(random.Random(1), 1.0, "GET", "health") is None
    assert choose_fault(random.Random(1), 0.0, "GET", "status") is None


def test_faulted_submits_never_create_jobs(live_server):
    server = live_server(fail_rate=0.5, fault_seed=3)
    accepted = 0
    with httpx.Client(base_url=server.url, timeout=20) as c:
        codes = []
        for i in range(40):
            response = c.post(f"/{APP}", json={"prompt": f"job {i}", "image_size": "square"})
            codes.append(response.status_code)
            if response.status_code == 200:
                accepted += 1
            else:
                assert response.status_code in (429, 500, 503)
                assert "detail" in response.json()
                assert response.headers["x-fal-error-type"]
                # every injected fault, the 500 included: the job was not created, re-sending is safe
                assert response.headers["x-fal-retryable"] == "true"
                if response.status_code == 429:
                    assert float(response.headers["retry-after"]) >= 0
        stats = c.get("/stats").json()
    assert 0 < accepted < 40
    assert stats["jobs"]["submitted"] == accepted
    assert stats["faults"]["total"] == 40 - accepted
    assert stats["requests"]["submit"] == 40
    assert "drop" not in stats["faults"]


def test_every_injected_fault_is_retryable(live_server):
    server = live_server(fail_rate=1.0, fault_seed=4)
    seen = set()
    with httpx.Client(base_url=server.url, timeout=20) as c:
        for i in range(30):
            for method, url in (("POST", f"/{APP}"), ("PUT", f"/{APP}/requests/x/cancel"), ("POST", "/files/upload")):
                response = c.request(method, url, json={"prompt": f"job {i}"})
                assert response.status_code in (429, 500, 503)
                assert response.headers["x-fal-retryable"] == "true", (method, url, response.status_code)
                seen.add(response.status_code)
        assert c.get("/stats").json()["jobs"]["submitted"] == 0
    assert seen == {429, 500, 503}


def test_health_and_stats_are_never_faulted(live_server):
    server = live_server(fail_rate=1.0, fault_seed=0)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        for _ in range(10):
            assert c.get("/health").status_code == 200
        assert c.get("/stats").json()["faults"]["total"] == 0
        assert outcome(c, "GET", f"/{APP}/requests/x/status") in {"429", "500", "503", "drop"}

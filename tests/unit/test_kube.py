"""The API client's own rules: a rate limit, and 429 answers waited out as the server asks."""

import asyncio
import time
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from tenant_operator.kube import Kube, RateLimit


def test_the_rate_limit_lets_a_burst_through_then_paces() -> None:
    limit = RateLimit(qps=50, burst=5)

    async def requests(count: int) -> float:
        started = time.monotonic()
        for _ in range(count):
            await limit.acquire()
        return time.monotonic() - started

    assert asyncio.run(requests(5)) < 0.05, "the burst passes at once"
    paced = asyncio.run(requests(10))
    assert 0.15 <= paced < 0.6, f"10 more at 50/s took {paced:.2f} s"


def test_requests_that_can_wait_get_a_token_after_every_other_waiting_request() -> None:
    limit = RateLimit(qps=200, burst=1)
    served: list[str] = []

    async def request(name: str, later: bool) -> None:
        await limit.acquire(later)
        served.append(name)

    async def burst() -> None:
        await limit.acquire()  # the bucket is empty: everything below waits
        events = [asyncio.create_task(request(f"event-{i}", later=True)) for i in range(5)]
        await asyncio.sleep(0)  # the events wait first
        statuses = [asyncio.create_task(request(f"status-{i}", later=False)) for i in range(3)]
        await asyncio.gather(*events, *statuses)

    asyncio.run(burst())
    assert served == [f"status-{i}" for i in range(3)] + [f"event-{i}" for i in range(5)]


def test_a_request_cancelled_while_it_waits_spends_no_token() -> None:
    limit = RateLimit(qps=20, burst=1)

    async def scenario() -> list[str]:
        await limit.acquire()
        served: list[str] = []

        async def request(name: str) -> None:
            await limit.acquire()
            served.append(name)

        gone = asyncio.create_task(request("gone"))
        kept = asyncio.create_task(request("kept"))
        await asyncio.sleep(0)
        gone.cancel()
        await kept
        assert limit.tokens < 1  # "kept" took the one token that came
        return served

    assert asyncio.run(scenario()) == ["kept"]


def throttled(retry_after: str) -> ApiException:
    error = ApiException(status=429, reason="Too Many Requests")
    error.headers = {"Retry-After": retry_after}
    return error


def test_too_many_requests_is_waited_out_and_other_errors_are_not() -> None:
    kube = Kube(kubernetes.client.ApiClient(), qps=1000, burst=100)
    answers: list[Any] = [throttled("0"), throttled("0"), "done"]

    def call() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert asyncio.run(kube._call("call", call)) == "done"
    assert answers == []

    answers[:] = [ApiException(status=500, reason="boom"), "never"]
    with pytest.raises(ApiException, match="boom"):
        asyncio.run(kube._call("call", call))


def test_every_request_is_counted_by_function_retries_included() -> None:
    kube = Kube(kubernetes.client.ApiClient(), qps=1000, burst=100)
    answers: list[Any] = [throttled("0"), "done"]

    def read_counted_thing() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def requests() -> float:
        sample = REGISTRY.get_sample_value(
            "tenant_operator_api_requests_total", {"function": "read_counted_thing"}
        )
        return sample or 0.0

    before = requests()
    assert asyncio.run(kube._call("read_counted_thing", read_counted_thing)) == "done"
    assert requests() - before == 2

"""The helm-worker process (operator/helm-worker): Helm 4 as a library, one process for every release.

`helm upgrade --install` as a process per release pays Go's start-up, the kubeconfig, API discovery and a
Python post-renderer process each time: about two thirds of its CPU (measured, bench/results). The worker pays
them once; it asks this process to post-render each release, which answers in-process with the same code the
post-renderer plugin runs. Its releases are ordinary Helm releases (`helm list`, `helm history`, `helm
rollback`).

Replies read like the CLI's: a release as `--output json` prints it, or the error text Helm would print, so
the caller treats both alike. The worker starts with the first release, and again after it exits; its exit
fails the releases under way (they are retried like any failed Helm call).
"""

import asyncio
import collections
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

READY_SECONDS = 30
LINE_LIMIT = 64 * 1024 * 1024  # a reply carries a release's manifests on one line
# Given the manifests Helm rendered: (the manifests to apply, "") or ("", why they are refused).
PostRender = Callable[[str], tuple[str, str]]


class WorkerUnavailableError(Exception):
    """The worker did not start, or exited while a release was under way; `stderr` is what it printed."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


class HelmWorker:
    def __init__(self, executable: str, env: Mapping[str, str], postrender: PostRender) -> None:
        self.executable = executable
        self.env = dict(env)
        self.postrender = postrender
        self._process: asyncio.subprocess.Process | None = None
        self._starting = asyncio.Lock()
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)  # its last lines

    async def upgrade(
        self,
        *,
        name: str,
        namespace: str,
        chart: Path,
        values: Mapping[str, Any],
        timeout: float,
        history_max: int,
    ) -> tuple[int, str, str]:
        """`helm upgrade --install` as the CLI would end: (0, the release as JSON, "") or (1, "", the error).
        TimeoutError after `timeout` and a margin; WorkerUnavailableError when the worker is gone."""
        process = await self._started()
        request_id = str(next(self._ids))
        reply = self._replies[request_id] = asyncio.get_running_loop().create_future()
        request = {
            "id": request_id,
            "op": "upgrade",
            "name": name,
            "namespace": namespace,
            "chart": str(chart),
            "values": values,
            "timeout_seconds": int(timeout),
            "history_max": history_max,
        }
        try:
            await self._send(process, request)
            message = await asyncio.wait_for(reply, timeout + 30)
        finally:
            self._replies.pop(request_id, None)
        if message.get("type") == "result":
            return 0, json.dumps(message.get("release", {})), ""
        return 1, "", str(message.get("stderr", ""))

    async def close(self) -> None:
        """End the worker: it finishes the releases under way, then exits."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), READY_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _started(self) -> asyncio.subprocess.Process:
        async with self._starting:
            process = self._process
            if process is not None and process.returncode is None:
                return process
            process = await asyncio.create_subprocess_exec(
                self.executable,
                env=self.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT,
                # Out of the terminal's process group: an interrupt reaches the operator, which ends the
                # worker by closing its input, after the releases under way (never half a release).
                start_new_session=True,
            )
            assert process.stdout is not None and process.stderr is not None
            self._stderr.clear()
            self._spawn(self._drain(process.stderr))
            try:
                line = await asyncio.wait_for(process.stdout.readline(), READY_SECONDS)
            except TimeoutError:
                line = b""
            if _decode(line).get("type") != "ready":
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                await asyncio.sleep(0)  # the last lines of stderr
                raise WorkerUnavailableError(self._last_words("helm-worker did not start"))
            logger.info("started %s (pid %d)", self.executable, process.pid)
            self._process = process
            self._spawn(self._read(process))
            return process

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, process: asyncio.subprocess.Process, message: Mapping[str, Any]) -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(message).encode() + b"\n")
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise WorkerUnavailableError(self._last_words("helm-worker exited")) from None

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """Hand each reply to its request and answer each post-render question, until the worker exits."""
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                message = _decode(line)
                if message.get("type") == "postrender":
                    self._spawn(self._answer(process, message))
                    continue
                reply = self._replies.get(str(message.get("id")))
                if reply is not None and not reply.done():
                    reply.set_result(message)
        except ValueError as error:  # a line past LINE_LIMIT: the worker is of no further use
            logger.error("%s: %s", self.executable, error)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        code = await process.wait()
        logger.warning("%s exited with status %s", self.executable, code)
        stderr = self._last_words(f"helm-worker exited with status {code}")
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(WorkerUnavailableError(stderr))

    async def _answer(self, process: asyncio.subprocess.Process, message: Mapping[str, Any]) -> None:
        manifests, refusal = await asyncio.to_thread(self.postrender, str(message.get("manifests", "")))
        answer = {"error": refusal} if refusal else {"manifests": manifests}
        with contextlib.suppress(WorkerUnavailableError):  # its exit fails the release itself
            await self._send(process, {"id": message.get("id"), "op": "postrendered", **answer})

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        """What the worker prints on stderr: kept for the error of its exit (Helm's own messages reach the
        release's error instead)."""
        while line := await stream.readline():
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _last_words(self, otherwise: str) -> str:
        """What the worker printed last on stderr, or `otherwise` when it printed nothing."""
        return "\n".join(self._stderr) or otherwise


def _decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}

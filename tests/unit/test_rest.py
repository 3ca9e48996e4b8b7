"""kube.Rest against a small HTTP server on loopback: what goes on the wire; what an error answer raises."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tenant_operator.kube import MERGE_PATCH, PATCH, Rest, path


class Recorder(BaseHTTPRequestHandler):
    """Answers from `answers` (path -> status, body, headers), 404 for any other path; keeps each request."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the API server: answers share pooled connections
    seen: ClassVar[list[dict[str, Any]]] = []
    answers: ClassVar[dict[str, tuple[int, Any, dict[str, str]]]] = {}

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {
                "method": self.command,
                "path": url.path,
                "query": dict(parse_qsl(url.query)),
                "headers": {key.lower(): value for key, value in self.headers.items()},
                "body": json.loads(body) if body else None,
            }
        )
        status, answer, headers = self.answers.get(
            url.path, (404, {"kind": "Status", "reason": "NotFound", "message": "not here"}, {})
        )
        data = json.dumps(answer).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle  # noqa: N815 (http.server's names)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def rest() -> Iterator[Rest]:
    Recorder.seen.clear()
    Recorder.answers.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = kubernetes.client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    configuration.api_key = {"authorization": "secret-token"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    try:
        yield Rest(kubernetes.client.ApiClient(configuration))
    finally:
        server.shutdown()
        server.server_close()


def test_a_request_carries_its_method_path_query_body_type_and_token(rest: Rest) -> None:
    target = path("/apis/example.io/v1", "namespaces", "team a", "things", "a/b")
    Recorder.answers[target] = (200, {"kind": "Thing"}, {})
    answer = rest(PATCH, target, query={"fieldManager": "op", "force": True, "dryRun": None},
                  body={"spec": {"n": 1}}, content_type=MERGE_PATCH)  # fmt: skip
    assert json.loads(answer.data) == {"kind": "Thing"}
    (request,) = Recorder.seen
    assert request["method"] == "PATCH"
    assert request["path"] == "/apis/example.io/v1/namespaces/team%20a/things/a%2Fb", "each name one segment"
    assert request["query"] == {"fieldManager": "op", "force": "true"}, "booleans as the API reads them"
    assert request["body"] == {"spec": {"n": 1}}
    assert request["headers"]["content-type"] == MERGE_PATCH
    assert request["headers"]["authorization"] == "Bearer secret-token"
    assert request["headers"]["accept"] == "application/json"


def test_an_answer_outside_2xx_raises_with_status_body_and_headers(rest: Rest) -> None:
    Recorder.answers["/api/v1/busy"] = (429, {"kind": "Status", "message": "slow down"}, {"Retry-After": "0"})
    Recorder.answers["/api/v1/fine"] = (200, {"kind": "Fine"}, {})
    with pytest.raises(ApiException) as refused:
        rest("GET", "/api/v1/missing")
    assert refused.value.status == 404 and "not here" in refused.value.body
    with pytest.raises(ApiException) as throttled:
        rest("GET", "/api/v1/busy")
    assert throttled.value.status == 429 and throttled.value.headers["Retry-After"] == "0"
    # The error answers were read whole: the pooled connection serves the next request its own answer.
    assert json.loads(rest("GET", "/api/v1/fine").data) == {"kind": "Fine"}


def test_a_lister_speaks_the_list_parameters_of_the_api(rest: Rest) -> None:
    Recorder.answers["/api/v1/pods"] = (200, {"kind": "PodList", "items": []}, {})
    pods = rest.lister("/api/v1/pods")
    answer = pods(label_selector="a=b", limit=500, _continue="token", _request_timeout=60)
    assert json.loads(answer.data)["kind"] == "PodList"
    pods(watch=True, resource_version="41", allow_watch_bookmarks=True, timeout_seconds=300).read()
    listed, watched = (request["query"] for request in Recorder.seen)
    assert listed == {"labelSelector": "a=b", "limit": "500", "continue": "token"}
    assert watched == {"watch": "true", "resourceVersion": "41", "allowWatchBookmarks": "true",
                       "timeoutSeconds": "300"}  # fmt: skip

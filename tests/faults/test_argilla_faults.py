"""`workbench annotate push` and `pull` against a real argilla-server that is down, refuses the key, or is SIGKILLed
part-way: one line on stderr naming the URL, exit code 1, no dataset version written, and pushing or pulling again
once the server is back gives what an uninterrupted push or pull gives.

The kill lands at a known point: the CLI talks to the server through `Relay`, a TCP relay that kills the server when
the client sends the request after a given one (the second batch of records, the publishing of a new dataset, the
second page of records). Run as a `gateway`, the relay answers 502 for the dead server, as a reverse proxy in front
of Argilla does; otherwise the client sees the connection drop.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import ARGILLA_KEYS, ARGILLA_WORKSPACE, ArgillaServer, free_port, workbench_cli
from workbench.annotate.client import connect

pytestmark = pytest.mark.slow

PAIR_COUNT = 600
"""Three batches of records in a push (256 each), three pages of records in a pull."""
PUSH_KEPT = "pairs sent before it are kept: push again once the server is back to send the rest"
PULL_KEPT = "no dataset version was written; pull again once the server is back"

REQUEST = re.compile(rb"(?:GET|PUT|POST|PATCH|DELETE) (\S+) HTTP/1\.1\r\n")
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Relay:
    """Relays TCP connections to `server`, watching the requests the client sends. Once `count` requests whose path
    matches `after` have gone through, the next request (of any path) is not passed on: the server is SIGKILLed
    first, then the relay answers 502 (`gateway`) or drops the connection. With `restart`, the server is started
    again (same data) before the gateway answers: a 502 while the server restarts."""

    def __init__(self, server: ArgillaServer, after: str, count: int = 1, gateway: bool = False, restart: bool = False):
        self.server, self.after, self.count, self.gateway = server, re.compile(after), count, gateway
        self.restart = restart
        self.seen, self.fired = 0, False
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.server.port))
        except OSError:  # the server is down: what a gateway or a closed port gives
            self._refuse(client, b"")
            return
        answering = threading.Event()  # set: this thread answers the client, the server's EOF must not close it
        threading.Thread(target=_copy, args=(upstream, client, answering), daemon=True).start()
        tail = b""
        while data := _recv(client):
            buffer = tail + data
            for match in REQUEST.finditer(buffer):
                if match.end() <= len(tail):
                    continue  # counted with the previous chunk
                if self._should_fire(match.group(1).decode()):
                    answering.set()
                    self.server.kill()
                    upstream.close()
                    if self.restart:
                        self.server.start()
                    self._refuse(client, buffer[match.start() :])
                    return
            upstream.sendall(data)
            tail = buffer[-512:]
        upstream.close()

    def _should_fire(self, path: str) -> bool:
        with self.lock:
            if self.seen >= self.count and not self.fired:
                self.fired = True
                return True
            if self.after.search(path):
                self.seen += 1
            return False

    def _refuse(self, client: socket.socket, request: bytes) -> None:
        if self.gateway:
            _read_request(client, request)  # a whole request first: a reply before its body is read may be lost
            client.sendall(BAD_GATEWAY)
        client.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _copy(source: socket.socket, target: socket.socket, answering: threading.Event) -> None:
    while data := _recv(source):
        try:
            target.sendall(data)
        except OSError:
            break
    source.close()
    if not answering.is_set():
        target.close()


def _read_request(sock: socket.socket, start: bytes) -> None:
    data = start
    while b"\r\n\r\n" not in data and (more := _recv(sock)):
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    missing = int(length.group(1)) - len(body) if length else 0
    while missing > 0 and (more := _recv(sock)):
        missing -= len(more)


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module; a test that kills it starts it again (same data, same port) before it checks."""
    server = ArgillaServer(tmp_path_factory.mktemp("argilla-faults")).start()
    yield server
    if server.running():
        server.stop()


@pytest.fixture
def live(server):
    if not server.running():
        server.start()
    return server


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [
        {"prompt": f"What is {i} plus {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}.",
         "chosen_score": 1.0, "rejected_score": 0.0, "source": "faults"}
        for i in range(PAIR_COUNT)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def reference(server, pairs_file) -> dict:
    """The records an uninterrupted push of `pairs_file` leaves on the server."""
    pushed = cli(server.url, "push", str(pairs_file), "--dataset", "reference", "--min-submitted", "1")
    assert pushed.returncode == 0, pushed.stderr
    return records_on(server.url, "reference")


@pytest.fixture(scope="module")
def judged(server, pairs_file, tmp_path_factory) -> Path:
    """Dataset `judged`: the pairs with one submitted answer each (a, b or tie: pairs and ties), and the version
    folder an uninterrupted pull of it writes."""
    import argilla as rg

    from workbench.annotate.pairs import read_pairs
    from workbench.annotate.push import preference_settings, to_record

    client = connect(server.url, ARGILLA_KEYS["owner"])
    dataset = rg.Dataset(name="judged", workspace=ARGILLA_WORKSPACE, settings=preference_settings(1), client=client)
    dataset.create()
    records = []
    for i, pair in enumerate(read_pairs(pairs_file)[0]):
        record = to_record(pair)
        answer = ("a", "b", "tie")[i % 3]
        record.responses.add(rg.Response("preference", answer, user_id=client.me.id, status="submitted"))
        records.append(record)
    dataset.records.log(records)
    out = tmp_path_factory.mktemp("uninterrupted-pull")
    pulled = cli(server.url, "pull", "--dataset", "judged", "--out", str(out))
    assert pulled.returncode == 0, pulled.stderr
    return out


def cli(url: str, *args: str, key: str = ARGILLA_KEYS["owner"]) -> subprocess.CompletedProcess:
    env = os.environ | {"ARGILLA_API_URL": url, "ARGILLA_API_KEY": key}
    return subprocess.run([*workbench_cli(), "annotate", *args], env=env, capture_output=True, text=True, timeout=300)


def the_error(result: subprocess.CompletedProcess) -> str:
    """The one line a failed command prints (after checking that it failed, with one line and no traceback)."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def fails_when_killed(relay: Relay, command: str, args: list[str], kept: str, said: str | None = None) -> None:
    """`workbench annotate COMMAND ARGS` through `relay` kills the server and fails with the line that says so
    (`said`, if given)."""
    try:
        line = the_error(cli(relay.url, command, *args))
    finally:
        relay.close()
    assert relay.fired, f"the server was not killed during the {command}"
    if said is not None:
        assert line == said
    elif relay.gateway:
        assert line == f"error: the Argilla server at {relay.url} failed during the {command} (HTTP 502): {kept}"
    else:
        assert line.startswith(
            f"error: lost the connection to the Argilla server at {relay.url} during the {command} ("
        )
        assert line.endswith(f"): {kept}")


def records_on(url: str, name: str) -> dict[str, tuple]:
    """The dataset's records by id (the pair's key): fields, metadata and suggestions."""
    dataset = connect(url, ARGILLA_KEYS["owner"]).datasets(name=name, workspace=ARGILLA_WORKSPACE)
    records = list(dataset.records(with_suggestions=True))
    by_id = {r.id: (r.fields.to_dict(), r.metadata.to_dict(), r.suggestions.to_dict()) for r in records}
    assert len(by_id) == len(records), "two records with the same id"
    return by_id


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# --- server down, wrong key -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["push", "pull"])
def test_server_down_is_one_line_that_names_the_url(command, pairs_file, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    args = [str(pairs_file), "--dataset", "down"] if command == "push" else ["--dataset", "down", "--out", str(out)]
    line = the_error(cli(url, command, *args))
    assert line.startswith(f"error: cannot reach the Argilla server at {url} (")
    assert line.endswith("start it with `workbench annotate serve` or set ARGILLA_API_URL")
    assert not out.exists()


@pytest.mark.parametrize("command", ["push", "pull"])
def test_wrong_api_key_is_one_line_and_changes_nothing(command, live, judged, pairs_file, tmp_path):
    out = tmp_path / "out"
    args = (
        [str(pairs_file), "--dataset", "wrong-key"] if command == "push" else ["--dataset", "judged", "--out", str(out)]
    )
    line = the_error(cli(live.url, command, *args, key="not-a-real-key-123"))
    assert line == f"error: the Argilla server at {live.url} rejected the API key: check ARGILLA_API_KEY"
    assert not out.exists()
    assert connect(live.url, ARGILLA_KEYS["owner"]).datasets(name="wrong-key", workspace=ARGILLA_WORKSPACE) is None


# --- the server killed during a push or a pull ----------------------------------------------------------------------

PUSH_STOPS = {
    # name: (the requests to let through, how many, a gateway in front, records on the server after the kill)
    "second-batch": (r"/records/bulk$", 1, False, 256),
    "second-batch-behind-gateway": (r"/records/bulk$", 1, True, 256),
    "dataset-creation": (r"/questions$", 2, False, None),  # killed at the first metadata property: a draft dataset
}


@pytest.mark.parametrize("stop", list(PUSH_STOPS))
def test_push_stopped_by_a_killed_server_finishes_when_pushed_again(stop, live, reference, pairs_file):
    after, count, gateway, kept = PUSH_STOPS[stop]
    name = f"push-{stop}"
    relay = Relay(live, after, count, gateway)
    fails_when_killed(relay, "push", [str(pairs_file), "--dataset", name, "--min-submitted", "1"], PUSH_KEPT)

    live.start()  # the same SQLite database: what the killed server committed is there
    dataset = connect(live.url, ARGILLA_KEYS["owner"]).datasets(name=name, workspace=ARGILLA_WORKSPACE)
    if kept is None:
        assert dataset.api_model().status == "draft"
    else:
        assert len(records_on(live.url, name)) == kept  # a batch is all there or not at all

    again = cli(live.url, "push", str(pairs_file), "--dataset", name, "--min-submitted", "1")
    assert again.returncode == 0, again.stderr
    assert f"{PAIR_COUNT - (kept or 0)} added, {kept or 0} already present" in again.stdout
    assert records_on(live.url, name) == reference


PULL_STOPS = {
    # name: (a gateway in front, the server back before the gateway answers 502)
    "direct": (False, False),
    "behind-gateway": (True, False),
    # The SDK takes the 502 for "the dataset is gone" and stops paging, silently; the count check catches it.
    "behind-gateway-while-restarting": (True, True),
}


@pytest.mark.parametrize("stop", list(PULL_STOPS))
def test_pull_stopped_by_a_killed_server_writes_nothing_and_pulling_again_matches(stop, live, judged, tmp_path):
    gateway, restart = PULL_STOPS[stop]
    out = tmp_path / "out"
    relay = Relay(live, r"/records\?", 1, gateway, restart)  # killed when the client asks for its second page
    short_read = (
        f"error: the Argilla server at {relay.url} sent 256 of the {PAIR_COUNT} records of {ARGILLA_WORKSPACE}/judged "
        f"(it failed or the dataset changed during the pull): {PULL_KEPT}"
    )
    fails_when_killed(
        relay, "pull", ["--dataset", "judged", "--out", str(out)], PULL_KEPT, short_read if restart else None
    )
    assert not out.exists(), "nothing is written, not even a temporary folder"

    if not live.running():
        live.start()
    again = cli(live.url, "pull", "--dataset", "judged", "--out", str(out))
    assert again.returncode == 0, again.stderr
    pulled, uninterrupted = files_under(out), files_under(judged)
    assert sorted(pulled) == sorted(uninterrupted)
    for path, content in pulled.items():
        if path.endswith("provenance.json"):  # the same but for the time of the pull
            ours, theirs = json.loads(content), json.loads(uninterrupted[path])
            assert ours.pop("pulled_at") and theirs.pop("pulled_at") and ours == theirs
        else:
            assert content == uninterrupted[path], path

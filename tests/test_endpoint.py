"""verify --endpoint: the extended model through a real OpenAI-compatible server (llama-cpp-python's, started here
on 127.0.0.1 with an API key), the baseline in-process; a small proxy in front of it injects the faults."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_cli_inspect import run

pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")  # llama-cpp-python[server]

SECRET = "sk-test-0123456789abcdef"  # the server's key: it must never appear in anything verify prints or writes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            request = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {SECRET}"})
            with urllib.request.urlopen(request, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the server did not answer in {seconds:.0f} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def served(smollm2_gguf, tmp_path_factory):
    """The extended SmolLM2 GGUF behind llama-cpp-python's server on 127.0.0.1, stopped after the module."""
    from yarn_cli.api import apply_extend, plan_extend

    work = tmp_path_factory.mktemp("endpoint")
    model = work / "smollm2-x2.gguf"
    apply_extend(plan_extend(smollm2_gguf, model, scale=2))
    port, log = _free_port(), work / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", "4096", "--api_key", SECRET]
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait(url, process, log)
        yield model, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _verify(model, url, capsys, monkeypatch, *extra):
    monkeypatch.setenv("YARN_TEST_SERVER_KEY", SECRET)
    args = ["verify", str(model), "--endpoint", url, "--api-key-env", "YARN_TEST_SERVER_KEY", "--lengths", "1k", "--depths", "0.5"]
    return run([*args, "--tasks", "passkey", *extra], capsys)


def test_the_extended_model_runs_through_the_server_and_the_key_never_shows(served, capsys, monkeypatch, tmp_path):
    model, url = served
    folder = tmp_path / "report"
    code, out, err = _verify(model, url, capsys, monkeypatch, "--json", "--report", str(folder))
    report = json.loads(out)
    assert report["engine"] == "endpoint" and report["device"] == url
    assert report["accuracy"]["extended"]["1024"] == 1.0  # the server found the key
    # llama-cpp-python's echo scores each prompt token with the distribution after it: caught, and said
    assert report["parity"] is None and any("shifts them by one position" in n for n in report["notes"]), report["notes"]
    written = out + err + (folder / "report.html").read_text(encoding="utf-8") + (folder / "report.json").read_text(encoding="utf-8")
    assert SECRET not in written, written[max(0, written.find(SECRET) - 300) : written.find(SECRET) + 40]


@pytest.mark.parametrize(
    ("arguments", "environment", "said", "exit_code"),
    [
        (["--endpoint", "ftp://127.0.0.1/v1"], {}, "give the server's http(s) base URL", 2),
        (["--endpoint", "http://user:pw@127.0.0.1:1/v1"], {}, "the URL carries credentials", 2),
        (["--endpoint", "http://127.0.0.1:1/v1"], {}, "cannot reach the server", 7),
        (["--endpoint", "http://127.0.0.1:1/v1", "--api-key-env", "YARN_TEST_UNSET"], {}, "--api-key-env YARN_TEST_UNSET", 2),
        (["--served-model", "x"], {}, "--served-model go with --endpoint URL", 2),
        (["--endpoint", "SERVED", "--api-key-env", "K", "--served-model", "other"], {"K": SECRET}, "--served-model other: ", 2),
        (["--endpoint", "SERVED", "--api-key-env", "K"], {"K": "wrong-key"}, "GET /models was refused (HTTP 401", 2),
        (["--endpoint", "SERVED", "--api-key-env", "K", "--concurrency", "many"], {"K": SECRET}, "--concurrency", 2),
    ],
)
def test_bad_endpoint_input_is_one_line_and_writes_nothing(served, capsys, monkeypatch, tmp_path, arguments, environment, said, exit_code):
    model, url = served
    monkeypatch.delenv("YARN_TEST_UNSET", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    arguments = [url if a == "SERVED" else a for a in arguments]
    code, out, err = run(["verify", str(model), *arguments, "--lengths", "1k", "--report", str(tmp_path / "r")], capsys)
    assert code == exit_code and said in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists() and SECRET not in out + err


class _Proxy(http.server.ThreadingHTTPServer):
    """Forwards to the server, but answers the first ``busy`` completions with 429 and, with ``short``, reports one
    prompt token fewer than the server counted (as a server that cut the prompt would)."""

    def __init__(self, target: str, busy: int = 0, short: bool = False):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.target, self.busy, self.short, self.refused = target, busy, short, 0


class _Forward(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _forward(self, body: bytes | None) -> None:
        proxy = self.server
        if body is not None and self.path.endswith("/completions") and proxy.refused < proxy.busy:
            proxy.refused += 1
            self.send_response(429)
            self.end_headers()
            return
        request = urllib.request.Request(proxy.target + self.path[len("/v1") :], data=body, headers=dict(self.headers), method=self.command)
        status = 200
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:  # the server's own refusal goes back as it was
            status, data = exc.code, exc.read()
        if proxy.short and status == 200 and self.path.endswith("/completions"):
            answer = json.loads(data)
            answer["usage"]["prompt_tokens"] -= 1
            data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._forward(None)

    def do_POST(self):
        self._forward(self.rfile.read(int(self.headers["Content-Length"])))


@pytest.fixture
def proxy(served):
    servers = []

    def start(**faults) -> str:
        server = _Proxy(served[1], **faults)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_busy_server_is_retried(served, proxy, capsys, monkeypatch):
    url = proxy(busy=3)
    code, out, err = _verify(served[0], url, capsys, monkeypatch, "--json")
    assert json.loads(out)["accuracy"]["extended"]["1024"] == 1.0, err


def test_a_server_that_counts_the_prompt_otherwise_is_one_line(served, proxy, capsys, monkeypatch, tmp_path):
    url = proxy(short=True)
    code, out, err = _verify(served[0], url, capsys, monkeypatch, "--report", str(tmp_path / "r"))
    assert code == 2 and "prompt tokens where the checkpoint's tokenizer gives" in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "r").exists()

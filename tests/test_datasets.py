"""Named datasets downloaded on first use (sha256-checked, cached, written atomically), against a local HTTP server
on 127.0.0.1 — never the internet. The shakespeare cases serve the real file from ../shared/data beside the repo
and are skipped only when it is absent."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path
from typing import Iterator

import pytest

import blasgpt
from blasgpt import data
from blasgpt.data import DATASETS, Dataset, cache_dir, data_path, load_text
from conftest import ONE_BLAS_THREAD, blasgpt_cli

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"
UNREACHABLE = "http://127.0.0.1:9/nothing-listens-here"  # the discard port: a refused connection, at once


class Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 and counts the requests of each path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.lstrip("/")
                server.hits[name] = server.hits.get(name, 0) + 1
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        if not self.thread.is_alive():
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "blasgpt"
    return cache_dir()


def shakespeare_bytes() -> bytes:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"the real tinyshakespeare.txt is not at {SHAKESPEARE}")
    raw = SHAKESPEARE.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == data.SHAKESPEARE_SHA256
    return raw


def everything_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


TINY = "a small text\nfor a named dataset\n".encode()


def tiny_dataset(url: str) -> Dataset:
    return Dataset("tiny", "tiny.txt", "text", url, hashlib.sha256(TINY).hexdigest())


def test_first_use_downloads_then_the_cache_is_read(server, cache):
    server.files["tiny.txt"] = TINY
    ds = tiny_dataset(server.url("tiny.txt"))
    assert ds.path() == cache / "tiny.txt"
    assert (cache / "tiny.txt").read_bytes() == TINY and server.hits == {"tiny.txt": 1}
    assert ds.path() == cache / "tiny.txt"
    assert server.hits == {"tiny.txt": 1}, "the second use downloaded again"
    assert everything_under(cache) == ["tiny.txt"]


def test_a_damaged_cache_is_downloaded_again(server, cache):
    server.files["tiny.txt"] = TINY
    cache.mkdir(parents=True)
    (cache / "tiny.txt").write_bytes(TINY[:-5])  # e.g. a copy truncated by hand
    assert tiny_dataset(server.url("tiny.txt")).path().read_bytes() == TINY
    assert server.hits == {"tiny.txt": 1}


def test_a_wrong_checksum_writes_nothing(server, cache):
    server.files["tiny.txt"] = TINY + b"tampered\n"
    with pytest.raises(blasgpt.DataError, match=r"has sha256 [0-9a-f]{64}, expected [0-9a-f]{64}; nothing was "
                                                r"written"):
        tiny_dataset(server.url("tiny.txt")).path()
    assert server.hits == {"tiny.txt": 1}
    assert everything_under(cache) == [], "a file or a temporary was left in the cache"


def test_a_failed_transfer_writes_nothing(server, cache):
    with pytest.raises(blasgpt.DataError, match="could not download .*/missing.txt: Not Found"):
        tiny_dataset(server.url("missing.txt")).path()
    with pytest.raises(blasgpt.DataError, match="could not download http://127.0.0.1:9/"):
        tiny_dataset(UNREACHABLE).path()
    assert everything_under(cache) == []


def test_a_download_over_the_size_cap_is_refused_while_it_arrives(server, cache, monkeypatch):
    """The transfer is read in pieces and stopped at the corpus size cap (1 GiB; 3 MiB here), not read whole."""
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 3 << 20)
    server.files["huge.txt"] = b"a" * (5 << 20)
    with pytest.raises(blasgpt.DataError, match="huge.txt passed 3,145,728 bytes, the most a corpus may have; "
                                                "nothing was written"):
        tiny_dataset(server.url("huge.txt")).path()
    assert everything_under(cache) == []
    server.files["fits.txt"] = TINY
    assert tiny_dataset(server.url("fits.txt")).path().read_bytes() == TINY


def test_the_environment_overrides_the_url(server, cache, monkeypatch):
    server.files["mirror/tiny.txt"] = TINY
    monkeypatch.setenv("BLASGPT_TINY_URL", server.url("mirror/tiny.txt"))
    assert tiny_dataset(UNREACHABLE).path().read_bytes() == TINY
    assert server.hits == {"mirror/tiny.txt": 1}


def test_an_existing_file_wins_over_a_dataset_name(tmp_path, monkeypatch, cache):
    """data_path: a file called "shakespeare" in the working directory is that file (nothing downloaded); a name
    that is neither a file nor a dataset stays a path (and is reported missing when read)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BLASGPT_SHAKESPEARE_URL", UNREACHABLE)
    Path("shakespeare").write_text("my own\n")
    assert data_path("shakespeare") == Path("shakespeare")
    assert load_text("shakespeare")[1].chars == ["\n", " ", "m", "n", "o", "w", "y"]
    assert data_path("nosuch") == Path("nosuch")
    with pytest.raises(FileNotFoundError, match="data file not found: nosuch"):
        load_text("nosuch")
    assert data_path("names") == data.BUNDLED_NAMES and DATASETS["names"].mode == "lines"
    assert everything_under(cache) == []


def test_shakespeare_downloads_once_and_loads(server, cache, monkeypatch):
    raw = shakespeare_bytes()
    server.files["input.txt"] = raw
    monkeypatch.setenv("BLASGPT_SHAKESPEARE_URL", server.url("input.txt"))
    ds = DATASETS["shakespeare"]
    assert ds.mode == "text" and ds.sha256 == hashlib.sha256(raw).hexdigest()
    text_data, tok = load_text("shakespeare")
    assert server.hits == {"input.txt": 1} and (cache / ds.file).read_bytes() == raw
    assert len(text_data) == len(raw.decode()) == 1_115_394 and tok.vocab_size == 66  # 65 characters + BOS
    assert text_data.tokens.nbytes == 4 * len(text_data)
    load_text("shakespeare")
    assert server.hits == {"input.txt": 1}


def test_shakespeare_with_the_wrong_bytes_writes_nothing(server, cache, monkeypatch):
    server.files["input.txt"] = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    monkeypatch.setenv("BLASGPT_SHAKESPEARE_URL", server.url("input.txt"))
    with pytest.raises(blasgpt.DataError, match=f"expected {data.SHAKESPEARE_SHA256}; nothing was written"):
        load_text("shakespeare")
    assert everything_under(cache) == []


cli = blasgpt_cli


def test_cli_trains_on_shakespeare_from_a_local_server(server, tmp_path):
    """`train --data shakespeare --data-mode text` fetches the file once into $XDG_CACHE_HOME/blasgpt; `train
    --data-mode text` (its default data) and `eval` (the run's validation split) then read the cache, with the
    server gone."""
    raw = shakespeare_bytes()
    server.files["input.txt"] = raw
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "BLASGPT_SHAKESPEARE_URL": server.url("input.txt")}
    quick = ["--steps", "2", "--batch-size", "2", "--samples", "0", "--log-every", "0"]
    r = cli(["train", "--data", "shakespeare", "--data-mode", "text", *quick, "--out", "run"], tmp_path,
             env={**ONE_BLAS_THREAD, **env})
    assert r.returncode == 0, r.stderr
    assert "data shakespeare: 1,003,855 train + 111,539 val characters (text mode), vocab 66" in r.stdout
    assert (tmp_path / "xdg" / "blasgpt" / "tinyshakespeare.txt").read_bytes() == raw
    assert server.hits == {"input.txt": 1}
    server.close()
    env["BLASGPT_SHAKESPEARE_URL"] = UNREACHABLE
    r = cli(["train", "--data-mode", "text", *quick, "--out", "run2"], tmp_path, env={**ONE_BLAS_THREAD, **env})
    assert r.returncode == 0, r.stderr
    assert "data shakespeare: 1,003,855 train" in r.stdout
    r = cli(["eval", "--checkpoint", "run/ckpt.safetensors", "--json"], tmp_path, env={**ONE_BLAS_THREAD, **env})
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["targets"] == 111_539 - 1 and result["data"] == "shakespeare (validation split)"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result["loss"] == rows[-1]["val_loss"]
    assert sorted(os.listdir(tmp_path)) == ["run", "run2", "xdg"]

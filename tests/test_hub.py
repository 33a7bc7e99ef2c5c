"""push_to_hub against a local HTTP stand-in for the Hub: the real huggingface_hub client code runs.

The stand-in speaks just enough of the Hub's protocol for ``HfApi.create_repo`` / ``create_branch`` /
``upload_folder`` (legacy LFS path; Xet storage is disabled because its CAS protocol cannot be
emulated here):

* ``POST /api/repos/create``, ``POST /api/models/{repo}/branch/{branch}``
* ``POST /api/validate-yaml`` (400 for a ``base_model_relation`` the Hub does not accept)
* ``POST /api/models/{repo}/preupload/{rev}`` (``lfs`` for ``*.safetensors``, else ``regular``)
* ``POST /{repo}.git/info/lfs/objects/batch`` -> ``PUT /lfs-upload/{oid}`` + ``POST /lfs-verify``
* ``POST /api/models/{repo}/commit/{rev}`` (ndjson: base64 files and LFS pointers)

``fail[route]`` lists status codes answered (once each) before behaving normally; ``always_fail[route]``
is answered every time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import types
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from families import make_model

from hf_prune import MagnitudeConfig, prune

ACCEPTED_RELATIONS = {"adapter", "merge", "quantized", "finetune"}


class HubStandIn:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (route, path, headers)
        self.repos: dict[str, dict[str, Any]] = {}
        self.branches: dict[str, set[str]] = defaultdict(lambda: {"main"})
        self.files: dict[tuple[str, str], dict[str, bytes]] = defaultdict(
            dict
        )  # (repo, rev) -> path -> bytes
        self.lfs: dict[str, bytes] = {}
        self.commits: list[dict[str, Any]] = []
        self.fail: dict[str, list[int]] = {}  # route -> status codes answered once each, in order
        self.always_fail: dict[str, int] = {}  # route -> status code answered every time
        self.lock = threading.Lock()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def count(self, route: str) -> int:
        return sum(1 for r, _, _ in self.requests if r == route)

    def _take_failure(self, route: str) -> int | None:
        with self.lock:
            if route in self.always_fail:
                return self.always_fail[route]
            codes = self.fail.get(route)
            return codes.pop(0) if codes else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, code: int, payload: Any = None) -> None:
                data = json.dumps(payload if payload is not None else {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                body = self._body()
                path = self.path.split("?")[0]
                route, args = hub._match(method, path)
                with hub.lock:
                    hub.requests.append((route, path, dict(self.headers)))
                code = hub._take_failure(route)
                if code is not None:
                    return self._send(code, {"error": f"stand-in failure on {route}"})
                try:
                    status, payload = hub._handle(route, args, body, self.headers)
                except Exception as err:  # a bug in a request: answer 400 so the test sees it
                    status, payload = 400, {"error": f"{type(err).__name__}: {err}"}
                self._send(status, payload)

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_GET(self) -> None:
                self._route("GET")

        return Handler

    _ROUTES = [
        ("POST", r"/api/repos/create", "create"),
        ("POST", r"/api/validate-yaml", "validate"),
        ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>.+)", "preupload"),
        ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>.+)", "commit"),
        ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<branch>.+)", "branch"),
        ("POST", r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("POST", r"/lfs-verify", "lfs_verify"),
    ]

    def _match(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        from urllib.parse import unquote

        for m, pattern, name in self._ROUTES:
            hit = re.fullmatch(pattern, path)
            if m == method and hit:
                return name, {k: unquote(v) for k, v in hit.groupdict().items()}
        return f"unknown {method} {path}", {}

    def _handle(self, route: str, args: dict[str, str], body: bytes, headers: Any) -> tuple[int, Any]:
        if route == "create":
            data = json.loads(body)
            repo = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
            self.repos.setdefault(repo, {"visibility": data.get("visibility"), "type": data.get("type")})
            return 200, {"url": f"{self.url}/{repo}", "name": repo}
        if route == "validate":
            content = json.loads(body)["content"]
            match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
            meta = yaml.safe_load(match.group(1)) if match else {}
            relation = (meta or {}).get("base_model_relation")
            if relation is not None and relation not in ACCEPTED_RELATIONS:
                return 400, {
                    "errors": [
                        {"message": f'"base_model_relation" must be one of {sorted(ACCEPTED_RELATIONS)}'}
                    ]
                }
            return 200, {"errors": [], "warnings": []}
        if route == "branch":
            self.branches[args["repo"]].add(args["branch"])
            return 200, {}
        if route == "preupload":
            if args["repo"] not in self.repos:
                return 404, {"error": "Repository not found"}
            files = json.loads(body)["files"]
            return 200, {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "lfs"
                        if f["path"].endswith(".safetensors") or f["size"] > 10_000_000
                        else "regular",
                        "shouldIgnore": False,
                        "oid": None,
                    }
                    for f in files
                ]
            }
        if route == "lfs_batch":
            data = json.loads(body)
            objects = []
            for obj in data["objects"]:
                objects.append(
                    {
                        "oid": obj["oid"],
                        "size": obj["size"],
                        "authenticated": True,
                        "actions": {
                            "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}", "header": {}},
                            "verify": {"href": f"{self.url}/lfs-verify", "header": {}},
                        },
                    }
                )
            return 200, {"transfer": "basic", "objects": objects}
        if route == "lfs_upload":
            if hashlib.sha256(body).hexdigest() != args["oid"]:
                return 400, {"error": "sha256 mismatch"}
            self.lfs[args["oid"]] = body
            return 200, {}
        if route == "lfs_verify":
            data = json.loads(body)
            ok = data["oid"] in self.lfs and len(self.lfs[data["oid"]]) == data["size"]
            return (200, {}) if ok else (404, {"error": "object not found"})
        if route == "commit":
            repo, rev = args["repo"], args["rev"]
            if repo not in self.repos:
                return 404, {"error": "Repository not found"}
            if rev not in self.branches[repo]:
                return 404, {"error": f"Revision {rev} not found"}
            lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
            header = lines[0]["value"]
            new: dict[str, bytes] = {}
            for item in lines[1:]:
                value = item["value"]
                if item["key"] == "file":
                    new[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    if value["oid"] not in self.lfs:
                        return 400, {"error": f"LFS object {value['oid']} was never uploaded"}
                    new[value["path"]] = self.lfs[value["oid"]]
                else:
                    return 400, {"error": f"unsupported operation {item['key']}"}
            self.files[(repo, rev)].update(new)
            self.commits.append(
                {"repo": repo, "revision": rev, "summary": header["summary"], "files": sorted(new)}
            )
            oid = hashlib.sha1(json.dumps(self.commits[-1]).encode()).hexdigest()
            return 200, {
                "commitUrl": f"{self.url}/{repo}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": None,
            }
        return 404, {"error": f"no such route: {route}"}


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as constants
    import huggingface_hub.utils._http as hf_http

    sleeps: list[float] = []
    # Retries sleep 1, 2, 4, 8, 8 s; record the waits instead of spending them.
    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(**{**vars(time), "sleep": sleeps.append}))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with HubStandIn() as standin:
        monkeypatch.setattr(constants, "ENDPOINT", standin.url)
        standin.sleeps = sleeps
        yield standin


def _pruned(evaluation: dict | None = None):
    model, _ = make_model("llama")
    pm = prune(model, MagnitudeConfig(sparsity=0.5), progress=False)
    if evaluation:
        pm.report.evaluation.update(evaluation)
    return pm


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


EVAL = {"perplexity": {"before": 53.5, "after": 60.1, "dataset": "wikitext"}}


# --------------------------------------------------------------------------------------------- tests
def test_push_to_hub_uploads_every_file_byte_for_byte(hub, tmp_path, monkeypatch):
    import shutil

    import hf_prune.integration.hub as hub_mod

    # Keep a copy of exactly the folder push_to_hub saved and uploaded (it is a temporary folder).
    real = hub_mod.push_checkpoint

    def copy_then_push(folder, *args, **kwargs):
        shutil.copytree(folder, tmp_path / "uploaded")
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(hub_mod, "push_checkpoint", copy_then_push)
    pm = _pruned(EVAL)
    info = pm.push_to_hub("me/tiny-mag", token="hf_standin", private=True, commit_message="first push")
    assert info.oid and "me/tiny-mag" in info.commit_url
    local = tmp_path / "uploaded"
    expected = {p.name: p.read_bytes() for p in local.iterdir() if p.is_file()}
    received = hub.files[("me/tiny-mag", "main")]
    assert (
        set(received)
        == set(expected)
        >= {"README.md", "config.json", "model.safetensors", "pruning_config.json"}
    )
    for name, data in expected.items():
        assert received[name] == data, name
    # The weights went through LFS (batch -> PUT -> verify), the JSON files as regular blobs.
    assert hub.count("lfs_upload") == 1 and hub.count("lfs_verify") == 1
    assert hashlib.sha256(received["model.safetensors"]).hexdigest() in hub.lfs
    assert hub.repos["me/tiny-mag"]["visibility"] == "private"
    assert hub.commits == [
        {"repo": "me/tiny-mag", "revision": "main", "summary": "first push", "files": sorted(expected)}
    ]
    auth = {
        h.get("authorization") or h.get("Authorization")
        for r, _, h in hub.requests
        if r in ("create", "commit")
    }
    assert auth == {"Bearer hf_standin"}
    assert 'from_pretrained("me/tiny-mag")' in received["README.md"].decode()


def test_pushed_card_metadata_parses_and_carries_results(hub, tmp_path):
    from huggingface_hub import ModelCard, metadata_load

    pm = _pruned(
        {**EVAL, "hfp_code_mc/acc": {"before": 0.5, "after": 0.42, "task": "hfp_code_mc", "metric": "acc"}}
    )
    pm.push_to_hub("me/tiny-eval", revision="pruned-v1", commit_message="with results")
    assert "pruned-v1" in hub.branches["me/tiny-eval"]
    readme = hub.files[("me/tiny-eval", "pruned-v1")]["README.md"]
    (tmp_path / "README.md").write_bytes(readme)
    meta = metadata_load(tmp_path / "README.md")
    assert meta["library_name"] == "hf_prune"
    assert "base_model_relation" not in meta
    assert {"hf_prune", "pruned", "pruning:magnitude", "llama"} <= set(meta["tags"])
    results = {r["metrics"][0]["type"]: r for r in meta["model-index"][0]["results"]}
    assert results["perplexity"]["metrics"][0]["value"] == pytest.approx(60.1)
    assert results["perplexity"]["dataset"]["type"] == "wikitext"
    assert results["acc"]["metrics"][0]["value"] == pytest.approx(0.42)
    card = ModelCard(readme.decode())
    assert {(e.metric_type, e.metric_value) for e in card.data.eval_results} == {
        ("perplexity", 60.1),
        ("acc", 0.42),
    }


def test_push_checkpoint_folder_is_read_only_and_failures_raise(hub, tmp_path):
    from huggingface_hub.errors import HfHubHTTPError

    from hf_prune.integration.hub import push_checkpoint

    folder = _pruned(EVAL).save_pretrained(tmp_path / "ckpt")
    before = _snapshot(folder)
    listing = sorted(p.name for p in tmp_path.iterdir())

    # 1. Preupload keeps failing with 500: huggingface_hub retries it 5 times with backoff, then raises.
    hub.always_fail["preupload"] = 500
    with pytest.raises(HfHubHTTPError, match="500"):
        push_checkpoint(folder, "me/failing")
    assert hub.count("preupload") == 6
    assert hub.sleeps == [1, 2, 4, 8, 8]
    assert hub.commits == [] and hub.count("commit") == 0

    # 2. The commit call itself is not retried (a retry could duplicate a commit): one 500, one raise.
    del hub.always_fail["preupload"]
    hub.fail["commit"] = [500]
    with pytest.raises(HfHubHTTPError, match="500"):
        push_checkpoint(folder, "me/failing")
    assert hub.count("commit") == 1 and hub.commits == []

    # 3. A transient 503 on the LFS upload is retried and the push then succeeds.
    hub.fail["lfs_upload"] = [503]
    n_upload = hub.count("lfs_upload")
    push_checkpoint(folder, "me/failing", commit_message="third time")
    assert hub.count("lfs_upload") - n_upload == 2
    assert (
        hub.files[("me/failing", "main")]["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    )

    # The local checkpoint folder never changed, and nothing was left next to it.
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_invalid_metadata_is_refused_before_any_request(hub, tmp_path):
    from hf_prune.integration.hub import push_checkpoint

    folder = _pruned().save_pretrained(tmp_path / "ckpt")
    readme = folder / "README.md"
    readme.write_text(
        readme.read_text().replace(
            "library_name: hf_prune",
            "library_name: hf_prune\nbase_model: org/base\nbase_model_relation: pruned",
            1,
        )
    )
    with pytest.raises(ValueError, match="base_model_relation"):
        push_checkpoint(folder, "me/bad-card")
    assert [r for r, _, _ in hub.requests if not r.startswith("unknown")] == []
    # The stand-in answers the Hub's own validator the same way, so the local check is not stricter.
    from huggingface_hub import HfApi

    with pytest.raises(ValueError, match="base_model_relation"):
        HfApi(endpoint=hub.url)._validate_yaml(readme.read_text())


def test_push_rejects_bad_input(hub, tmp_path):
    from hf_prune.integration.hub import push_checkpoint

    pm = _pruned()
    with pytest.raises(ValueError, match="repo id"):
        pm.push_to_hub("not a/valid//id")
    with pytest.raises(TypeError):
        pm.push_to_hub(None)
    with pytest.raises(FileNotFoundError, match="not an hf_prune checkpoint"):
        push_checkpoint(tmp_path, "me/x")
    assert hub.count("create") == 0


def test_pruning_config_push_to_hub(hub):
    cfg = MagnitudeConfig(sparsity=0.6)
    cfg.push_to_hub("me/config-only", token="hf_standin", commit_message="config")
    received = hub.files[("me/config-only", "main")]
    assert set(received) == {"pruning_config.json"}
    assert json.loads(received["pruning_config.json"]) == json.loads(cfg.to_json_string())
    assert hub.commits[-1]["summary"] == "config"


def test_pushed_weights_reload(hub, tmp_path):
    from hf_prune import AutoPrunedModelForCausalLM

    pm = _pruned()
    pm.push_to_hub("me/reload")
    out = tmp_path / "download"
    out.mkdir()
    for name, data in hub.files[("me/reload", "main")].items():
        (out / name).write_bytes(data)
    again = AutoPrunedModelForCausalLM.from_pretrained(out)
    ids = torch.randint(3, 96, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, pm(input_ids=ids).logits)


def test_push_to_hub_uploads_the_remembered_tokenizer(hub, tmp_path):
    from transformers import AutoTokenizer

    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    texts = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i * i)\n"] * 6
    tok = train_bpe_tokenizer(texts, vocab_size=300, model_max_length=64)
    model, _ = make_model("llama")  # ids are never run through it; only the files matter here
    pm = prune(model, MagnitudeConfig(sparsity=0.5), tokenizer=tok, progress=False)
    pm.push_to_hub("me/with-tokenizer")  # no tokenizer= here: the one given to prune() is uploaded
    received = hub.files[("me/with-tokenizer", "main")]
    assert {"tokenizer.json", "tokenizer_config.json", "model.safetensors", "README.md"} <= set(received)
    down = tmp_path / "download"
    down.mkdir()
    for name, data in received.items():
        (down / name).write_bytes(data)
    probe = "for x in range(3):\n    print(add(x, x))"
    assert AutoTokenizer.from_pretrained(down)(probe)["input_ids"] == tok(probe)["input_ids"]
    assert 'AutoTokenizer.from_pretrained("me/with-tokenizer")' in received["README.md"].decode()

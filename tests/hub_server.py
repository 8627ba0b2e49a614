"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1 for tests, driven by the real huggingface_hub client.

It speaks exactly the routes the client (huggingface_hub 2.x, Xet disabled) calls for what glassvit does:

    POST /api/repos/create                               create_repo (409 when it exists)
    POST /api/validate-yaml                              README.md front matter check before a commit
    POST /api/models/{repo}/preupload/{rev}              upload mode per file: always "regular" (content inline)
    POST /api/models/{repo}/commit/{rev}                 ndjson commit: header, file (base64), deletedFile/Folder
    POST /api/models/{repo}/branch/{branch}              create_branch
    POST /api/models/{repo}/tag/{rev}                    create_tag
    GET  /api/models/{repo}[/revision/{rev}]             model_info / repo_info: sha and siblings
    GET  /api/models/{repo}/tree/{rev}                   list_repo_tree / list_repo_files (one page)
    HEAD /{repo}/resolve/{rev}/{file}                    file metadata: X-Repo-Commit, ETag, Content-Length
    GET  /{repo}/resolve/{rev}/{file}                    file content
    GET  /api/agent-harnesses                            the client's user-agent registry (answered empty)

Errors carry the headers the client maps to its exceptions: X-Error-Code RepoNotFound, RevisionNotFound or
EntryNotFound, and X-Error-Message "Invalid credentials in Authorization header" for unknown tokens. Repositories
live in memory as git-like commits (40-hex ids, branches, tags). Every request is recorded in `requests`; any
request to a route not listed above is recorded in `unknown` and answered 404, so a test can assert the client
stayed on known routes. Private repositories are readable only with a token; writes need a token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
PIPELINE_TAGS = {"image-classification", "image-segmentation", "object-detection", "feature-extraction"}
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
ROUTES = [
    ("POST", re.compile(r"/api/repos/create"), "create_repo"),
    ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml"),
    ("POST", re.compile(rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    ("POST", re.compile(rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)"), "commit"),
    ("POST", re.compile(rf"/api/models/{REPO}/branch/(?P<branch>[^/]+)"), "create_branch"),
    ("POST", re.compile(rf"/api/models/{REPO}/tag/(?P<rev>[^/]+)"), "create_tag"),
    ("GET", re.compile(rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?"), "model_info"),
    ("GET", re.compile(rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)"), "tree"),
    ("HEAD", re.compile(rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ("GET", re.compile(rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ("GET", re.compile(r"/api/agent-harnesses"), "agent_harnesses"),
]


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        """A branch, a tag or a full commit id -> the commit, None when unknown."""
        oid = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        return self.commits.get(oid) if oid else None

    def add_commit(self, parent: Commit | None, files: dict[str, bytes], message: str) -> Commit:
        blobs = sorted((p, git_blob_sha(d)) for p, d in files.items())
        digest = hashlib.sha1(json.dumps([parent.oid if parent else None, message, len(self.commits), blobs]).encode())
        commit = Commit(digest.hexdigest(), files, message)
        self.commits[commit.oid] = commit
        return commit


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.body = {"error": message, **(body or {})}


class LocalHub:
    """The server and its in-memory repositories. Use as a context manager: `with LocalHub({token: user}) as hub`.

    Args:
        tokens: valid access tokens -> user name (the namespace create_repo uses when no organisation is given).
    """

    def __init__(self, tokens: dict[str, str]):
        self.tokens = dict(tokens)
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def requested(self, fragment: str) -> list[tuple[str, str]]:
        """Recorded requests whose path contains `fragment`."""
        return [r for r in self.requests if fragment in r[1]]

    # -- request dispatch ------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
        url = urlsplit(raw_path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self.lock:
            self.requests.append((method, path))
        for route_method, pattern, name in ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                try:
                    user = self._user(headers)
                    with self.lock:
                        return getattr(self, f"_{name}")(user=user, body=body, query=query, head=method == "HEAD",
                                                         **match.groupdict())
                except HubError as e:
                    err = {"X-Error-Message": e.message, **e.headers}
                    if e.code:
                        err["X-Error-Code"] = e.code
                    return e.status, err, json.dumps(e.body).encode()
        with self.lock:
            self.unknown.append((method, path))
        return 404, {}, b'{"error": "unknown route"}'

    def _user(self, headers) -> str | None:
        auth = headers.get("authorization")
        if auth is None:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _repo(self, repo: str, user: str | None, write: bool = False) -> Repo:
        found = self.repos.get(repo)
        if found is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if (found.private or write) and user is None:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return found

    def _commit_at(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    @staticmethod
    def _json(obj, status: int = 200, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()

    # -- routes ----------------------------------------------------------------------------------------------

    def _create_repo(self, user, body, **_):
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        payload = json.loads(body)
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo", body={"url": f"{self.url}/{repo_id}"})
        repo = Repo(repo_id, payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.branches["main"] = repo.add_commit(None, {".gitattributes": GITATTRIBUTES}, "initial commit").oid
        self.repos[repo_id] = repo
        return self._json({"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, body, **_):
        content = json.loads(body)["content"]
        errors = _card_metadata_errors(content)
        return self._json({"errors": [{"message": m} for m in errors], "warnings": []}, 400 if errors else 200)

    def _preupload(self, user, repo, rev, body, query, **_):
        commit = self._commit_at(self._repo(repo, user, write=True), rev)
        if "create_pr" in query:
            raise HubError(400, "pull requests are not supported by this test server")
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha(commit.files[f["path"]]) if f["path"] in commit.files else None}
            for f in json.loads(body)["files"]
        ]
        return self._json({"files": files, "commitOid": commit.oid})

    def _commit(self, user, repo, rev, body, query, **_):
        target = self._repo(repo, user, write=True)
        parent = self._commit_at(target, rev)
        if rev not in target.branches:
            raise HubError(400, f"cannot commit to {rev!r}: not a branch")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
        if header.get("parentCommit") not in (None, parent.oid):
            raise HubError(412, "parent commit is not the head of the branch")
        files = dict(parent.files)
        for op in lines[1:]:
            key, value = op["key"], op["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, f"commit operation {key!r} is not supported by this test server")
        commit = target.add_commit(parent, files, header.get("summary", ""))
        target.branches[rev] = commit.oid
        return self._json({"commitUrl": f"{self.url}/{repo}/commit/{commit.oid}", "commitOid": commit.oid,
                           "pullRequestUrl": None, "success": True})

    def _create_branch(self, user, repo, branch, body, **_):
        target = self._repo(repo, user, write=True)
        if branch in target.branches:
            raise HubError(409, f"branch {branch} already exists")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        target.branches[branch] = self._commit_at(target, start).oid
        return self._json({})

    def _create_tag(self, user, repo, rev, body, **_):
        target = self._repo(repo, user, write=True)
        tag = json.loads(body)["tag"]
        if tag in target.tags:
            raise HubError(409, f"tag {tag} already exists")
        target.tags[tag] = self._commit_at(target, rev).oid
        return self._json({})

    def _model_info(self, user, repo, rev=None, **_):
        target = self._repo(repo, user)
        commit = self._commit_at(target, rev or "main")
        return self._json({"id": repo, "modelId": repo, "sha": commit.oid, "private": target.private,
                           "siblings": [{"rfilename": p} for p in sorted(commit.files)]})

    def _tree(self, user, repo, rev, **_):
        commit = self._commit_at(self._repo(repo, user), rev)
        return self._json([{"type": "file", "path": p, "size": len(d), "oid": git_blob_sha(d)}
                           for p, d in sorted(commit.files.items())])

    def _agent_harnesses(self, **_):
        return self._json({"standardEnvVars": [], "harnesses": {}})

    def _resolve(self, user, repo, rev, path, head, **_):
        commit = self._commit_at(self._repo(repo, user), rev)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_sha(data)}"',
                   "Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        return 200, headers, b"" if head else data


def _card_metadata_errors(content: str) -> list[str]:
    """What the Hub's model-card metadata check would reject: bad YAML or wrongly typed known fields."""
    match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    if not match:
        return []
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as e:
        return [f"invalid YAML: {e}"]
    if not isinstance(meta, dict):
        return ["metadata must be a mapping"]
    errors = []
    for key in ("tags", "datasets"):
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(v, str) for v in meta[key])):
            errors.append(f'"{key}" must be a list of strings')
    for key in ("license", "library_name"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    if "pipeline_tag" in meta and meta["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" {meta["pipeline_tag"]!r} is not a known task')
    base = meta.get("base_model")
    if base is not None and not all(isinstance(b, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", b)
                                    for b in (base if isinstance(base, list) else [base])):
        errors.append('"base_model" must be a model id (org/name) or a list of them')
    return errors


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, payload = hub.handle(method, self.path, self.headers, body)
            self.send_response(status)
            headers.setdefault("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)

        def do_GET(self):
            self._serve("GET")

        def do_HEAD(self):
            self._serve("HEAD")

        def do_POST(self):
            self._serve("POST")

        def log_message(self, *args):
            pass

    return Handler

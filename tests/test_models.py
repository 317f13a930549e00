"""Model files pinned by sha256: downloads (resume, tampering, redirects, tokens), the store, the commands.

Everything is served by a loopback server (tests/support/modelserver.py) and run in process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from envbuild.core.errors import ConfigError
from envbuild.core.http.download import DownloadFailure, HashMismatch, Limits, download
from envbuild.settings.config import load_config
from tests.support.deploy import invoke_cli
from tests.support.modelserver import ModelServer, Served

pytestmark = pytest.mark.cli
FAST = Limits(tries=3, timeout=5.0, backoff=0.0)
BODY = random.Random(25).randbytes(3 * 1024 * 1024 + 17)  # seeded: a failure reproduces
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server() -> ModelServer:
    with ModelServer() as running:
        yield running


def make_project(root: Path, models: str = "") -> Path:
    (root / "ComfyUI").mkdir(parents=True, exist_ok=True)
    (root / "envbuild.toml").write_text(textwrap.dedent("""\
        # my deployment
        [comfyui]
        path = "ComfyUI"  # the checkout
        """) + textwrap.dedent(models), encoding="utf-8")
    return root


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"ENVBUILD_CACHE_DIR": str(tmp_path / "cache"), "PATH": os.environ.get("PATH", ""), **extra}


def pin_text(url: str, *, name: str = "sd15", folder: str = "checkpoints", sha: str = SHA,
             size: int = len(BODY)) -> str:
    return f'\n[models.{name}]\nurl = "{url}"\nsha256 = "{sha}"\nsize = {size}\nfolder = "{folder}"\n'


# -- downloads ------------------------------------------------------------------------------------------

def test_resume_after_a_drop_fetches_only_the_rest(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m.safetensors", Served(BODY, drop_after=1024 * 1024, drops=1))
    fetched = download(url, tmp_path / "store", sha256=SHA, size=len(BODY), limits=FAST)
    assert fetched.path.read_bytes() == BODY and fetched.sha256 == SHA
    assert server.sent["/m.safetensors"] == len(BODY)  # not one byte twice
    assert [h.get("Range") for _, h in server.requests] == [None, f"bytes={1024 * 1024}-"]


def test_a_partial_kept_from_an_earlier_run_is_resumed(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m", Served(BODY))
    partial = tmp_path / "store" / "partial" / f"{SHA}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(BODY[:2_000_000])  # what a Ctrl-C or a full disk left
    fetched = download(url, tmp_path / "store", sha256=SHA, size=len(BODY), limits=FAST)
    assert fetched.resumed_from == 2_000_000 and fetched.downloaded == len(BODY) - 2_000_000
    assert server.sent["/m"] == len(BODY) - 2_000_000 and not partial.exists()


def test_a_server_ignoring_range_restarts_cleanly(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m", Served(BODY, drop_after=500_000, drops=1, ignore_range=True))
    fetched = download(url, tmp_path / "store", sha256=SHA, size=len(BODY), limits=FAST)
    assert fetched.path.read_bytes() == BODY


def test_tampered_bytes_are_refused_naming_both_hashes(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m", Served(BODY, tamper=True))
    with pytest.raises(HashMismatch) as caught:
        download(url, tmp_path / "store", sha256=SHA, size=len(BODY), limits=FAST)
    assert SHA in str(caught.value) and caught.value.actual in str(caught.value) and caught.value.actual != SHA
    assert not list((tmp_path / "store").rglob("sha256/*"))  # nothing landed
    assert not list((tmp_path / "store").rglob("*.part"))  # wrong bytes are not kept for a resume


def test_a_server_sending_another_size_is_refused_before_the_body(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m", Served(BODY + b"x"))
    with pytest.raises(DownloadFailure, match="pin says"):
        download(url, tmp_path / "store", sha256=SHA, size=len(BODY), limits=FAST)
    assert not list((tmp_path / "store").rglob("sha256/*"))
    assert all(p.stat().st_size == 0 for p in (tmp_path / "store").rglob("*.part"))  # the body was not read


@pytest.mark.parametrize(("status", "words"), [(404, "not found"), (403, "forbidden"), (401, "authentication")])
def test_http_errors_say_what_they_mean(server: ModelServer, tmp_path: Path, status: int, words: str) -> None:
    url = server.add("/m", Served(BODY, status=status))
    with pytest.raises(DownloadFailure, match=words) as caught:
        download(url, tmp_path / "store", sha256=SHA, limits=FAST)
    assert caught.value.status == status


def test_a_slow_drip_is_abandoned(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m", Served(BODY[:100], drip=0.05))
    limits = Limits(tries=1, timeout=5.0, speed_limit=1000, speed_time=0.3, backoff=0.0)
    with pytest.raises(DownloadFailure, match="fewer than 1,000 bytes"):
        download(url, tmp_path / "store", limits=limits)


def test_a_redirect_to_another_origin_gets_no_token(server: ModelServer, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")  # as `envbuild -v` logs: httpx names every URL it requests
    with ModelServer() as cdn:
        signed = cdn.add("/blob", Served(BODY)) + "?X-Amz-Signature=abc"
        url = server.add("/resolve/main/m.safetensors", Served(redirect=signed))
        fetched = download(url, tmp_path / "store", headers={"Authorization": "Bearer hf_secret"}, limits=FAST)
    assert fetched.sha256 == SHA
    assert server.requests[0][1].get("Authorization") == "Bearer hf_secret"
    assert "Authorization" not in cdn.requests[0][1]
    assert "/blob?" in caplog.text and "Signature" not in caplog.text  # the signed URL's query never logged


# -- settings --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "words"), [
    ('folder = "../../etc"', "not one path component"),
    ('folder = "chekpoints"', "did you mean `checkpoints`"),
    ('folder = "checkpoints"\nfilename = "../x"', "not one path component"),
    ('folder = "checkpoints"\nsha256x = "1"', "unknown key"),
])
def test_bad_pins_are_refused_naming_the_line(tmp_path: Path, entry: str, words: str) -> None:
    text = f'\n[models.a]\nurl = "https://example.org/a.safetensors"\nsha256 = "{SHA}"\nsize = 1\n{entry}\n'
    make_project(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert words in str(caught.value) and "envbuild.toml:" in str(caught.value)


@pytest.mark.parametrize("url", ["https://user:pw@example.org/a.bin", "https://civitai.com/api/download/1?token=s3cr3t"])
def test_a_url_with_credentials_is_refused_and_not_printed(tmp_path: Path, url: str) -> None:
    make_project(tmp_path)
    result = invoke_cli(["model", "add", url], env=env_for(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "credentials" in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr and ":pw@" not in result.stdout + result.stderr


def test_hf_endpoint_rewrites_huggingface_urls(tmp_path: Path) -> None:
    from envbuild.settings.models import effective_url

    make_project(tmp_path, '\n[models]\nhf-endpoint = "https://hf-mirror.com/"\n')
    settings = load_config(tmp_path).models
    assert settings is not None and settings.hf_endpoint == "https://hf-mirror.com"
    assert effective_url("https://huggingface.co/a/b/resolve/main/c", settings.hf_endpoint) == \
        "https://hf-mirror.com/a/b/resolve/main/c"
    assert effective_url("https://huggingface.com.evil/x", settings.hf_endpoint) == "https://huggingface.com.evil/x"


def test_tokens_go_only_to_their_own_host() -> None:
    from envbuild.env.models import auth_headers

    env = {"HF_TOKEN": "hf_x", "CIVITAI_API_TOKEN": "cv_y"}
    assert auth_headers("https://huggingface.co/a", env) == {"Authorization": "Bearer hf_x"}
    assert auth_headers("https://cdn-lfs.huggingface.co/a", env) == {"Authorization": "Bearer hf_x"}
    assert auth_headers("https://civitai.com/api/download/models/1", env) == {"Authorization": "Bearer cv_y"}
    assert auth_headers("https://huggingface.co.evil.org/a", env) == {}
    assert auth_headers("https://hf-mirror.com/a", env) == {}


# -- the commands ----------------------------------------------------------------------------------------

def test_model_add_downloads_pins_and_keeps_comments(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/org/repo/resolve/main/split_files/vae/ae.safetensors", Served(BODY))
    make_project(tmp_path)
    result = invoke_cli(["model", "add", url], env=env_for(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "envbuild.toml").read_text()
    assert "# my deployment" in text and "# the checkout" in text
    pin = load_config(tmp_path).models.pins[0]  # type: ignore[union-attr]
    assert (pin.name, pin.folder, pin.filename, pin.sha256, pin.size) == ("ae", "vae", "ae.safetensors", SHA,
                                                                          len(BODY))
    placed = tmp_path / "ComfyUI" / "models" / "vae" / "ae.safetensors"
    assert placed.read_bytes() == BODY
    assert os.path.samefile(placed, tmp_path / "cache" / "models" / "sha256" / SHA)
    assert "computed by envbuild" in result.stdout and "folder vae (named in the URL" in result.stdout
    again = invoke_cli(["model", "add", url, "--name", "ae2", "--filename", "ae2.safetensors"], env=env_for(tmp_path),
                       cwd=tmp_path)
    assert again.returncode == 0 and server.sent[urlsplit(url).path] == len(BODY)  # the same URL: from the store


def test_model_add_enforces_a_given_sha256(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m.safetensors", Served(BODY))
    make_project(tmp_path)
    wrong = "0" * 64
    result = invoke_cli(["model", "add", url, "--sha256", wrong], env=env_for(tmp_path), cwd=tmp_path)
    assert result.returncode == 7 and wrong in result.stderr and SHA in result.stderr
    assert "[models" not in (tmp_path / "envbuild.toml").read_text()
    assert not (tmp_path / "ComfyUI" / "models").exists()


def test_fetch_restores_verifies_and_the_store_dedups(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m.safetensors", Served(BODY))
    first = make_project(tmp_path / "one", pin_text(url))
    second = make_project(tmp_path / "two", pin_text(url))
    env = env_for(tmp_path)
    result = invoke_cli(["fetch"], env=env, cwd=first)
    assert result.returncode == 0, result.stderr
    assert "downloaded" in result.stdout and "verified" in result.stdout
    assert "model sd15: 3.0 MiB of 3.0 MiB (100 %)" in result.stderr  # not a terminal: plain progress lines
    result = invoke_cli(["fetch"], env=env, cwd=second)  # a second deployment: no download, a hard link
    assert result.returncode == 0, result.stderr
    assert server.sent["/m.safetensors"] == len(BODY) and "from the store" in result.stdout
    a, b = (p / "ComfyUI" / "models" / "checkpoints" / "m.safetensors" for p in (first, second))
    assert os.path.samefile(a, b)
    again = invoke_cli(["fetch"], env=env, cwd=second)
    assert "already there" in again.stdout
    listed = json.loads(invoke_cli(["model", "list", "--json"], env=env, cwd=second).stdout)
    assert [m["state"] for m in listed["models"]] == ["ok"]


def test_fetch_refuses_a_tampering_server_and_places_nothing(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m.safetensors", Served(BODY, tamper=True))
    project = make_project(tmp_path / "p", pin_text(url))
    result = invoke_cli(["fetch"], env=env_for(tmp_path), cwd=project)
    assert result.returncode == 7 and SHA in result.stderr and "nothing was placed" in result.stderr
    assert not (project / "ComfyUI" / "models" / "checkpoints" / "m.safetensors").exists()


def test_the_hint_follows_what_failed_not_the_words_of_the_message() -> None:
    """A hash in a mismatch message can hold "401" or "404" (the fetch of random bytes above once got the
    token hint): the hint comes from the status and the mismatch flag."""
    from envbuild.env.models import ModelFetch, _hint
    from envbuild.settings.models import ModelPin

    pin = ModelPin("sd15", "https://example.org/m.safetensors", SHA, 1, "checkpoints", "m.safetensors")
    hashes = "sent 1 bytes with sha256 4011403a404, but the pin says " + SHA
    assert "other bytes" in _hint([ModelFetch(pin, Path(), "failed", problem=hashes, mismatch=True)])
    assert "HF_TOKEN" in _hint([ModelFetch(pin, Path(), "failed", problem="the server said 403", status=403)])
    assert "re-points" in _hint([ModelFetch(pin, Path(), "failed", problem="not found", status=404)])
    assert "again" in _hint([ModelFetch(pin, Path(), "failed", problem="timed out after 404 s")])


def test_a_token_is_sent_and_never_printed(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m.safetensors", Served(BODY, need_auth="Bearer hf_topsecret"))
    project = make_project(tmp_path / "p", pin_text(url))
    env = env_for(tmp_path)
    denied = invoke_cli(["fetch"], env=env, cwd=project)  # loopback is not huggingface.co: no token sent
    assert denied.returncode == 7 and "HF_TOKEN" in denied.stderr
    from envbuild.env import models

    models.TOKENS = ((*models.TOKENS, ("127.0.0.1", "HF_TOKEN")))
    try:
        result = invoke_cli(["fetch"], env={**env, "HF_TOKEN": "hf_topsecret"}, cwd=project)
    finally:
        models.TOKENS = models.TOKENS[:-1]
    assert result.returncode == 0, result.stderr
    assert "hf_topsecret" not in result.stdout + result.stderr + (project / "envbuild.toml").read_text()


def test_list_verify_and_remove(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m.safetensors", Served(BODY))
    project = make_project(tmp_path / "p", pin_text(url))
    env = env_for(tmp_path)
    assert "missing" in invoke_cli(["model", "list"], env=env, cwd=project).stdout
    assert invoke_cli(["fetch"], env=env, cwd=project).returncode == 0
    assert invoke_cli(["model", "verify"], env=env, cwd=project).returncode == 0
    placed = project / "ComfyUI" / "models" / "checkpoints" / "m.safetensors"
    placed.unlink()  # replaced by a user's file of the same size
    placed.write_bytes(BODY[:-1] + b"\0")
    assert "ok" in invoke_cli(["model", "list"], env=env, cwd=project).stdout  # size alone cannot tell
    verified = invoke_cli(["model", "verify"], env=env, cwd=project)
    assert verified.returncode == 1 and "modified" in verified.stdout
    removed = invoke_cli(["model", "remove", "sd15"], env=env, cwd=project)
    assert removed.returncode == 0 and "kept" in removed.stdout and placed.exists()
    assert "[models" not in (project / "envbuild.toml").read_text()


@pytest.mark.parametrize("fault", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_full_disk_or_ctrl_c_keeps_the_partial_for_resume(server: ModelServer, tmp_path: Path,
                                                            fault: BaseException) -> None:
    url = server.add("/m", Served(BODY))

    def interrupt(done: int, total: int | None) -> None:
        if done >= 1024 * 1024:
            raise fault

    with pytest.raises(type(fault)):
        download(url, tmp_path / "store", sha256=SHA, size=len(BODY), limits=FAST, progress=interrupt)
    partial = tmp_path / "store" / "partial" / f"{SHA}.part"
    kept = partial.stat().st_size
    assert kept >= 1024 * 1024 and not list((tmp_path / "store").rglob("sha256/*"))
    fetched = download(url, tmp_path / "store", sha256=SHA, size=len(BODY), limits=FAST)
    assert fetched.resumed_from == kept and fetched.path.read_bytes() == BODY


def test_names_that_escape_are_refused(tmp_path: Path) -> None:
    make_project(tmp_path)
    env = env_for(tmp_path)
    for args in (["--folder", "../../etc"], ["--folder", "checkpoints", "--filename", "../x"],
                 ["--folder", "loras", "--name", "../x"]):
        result = invoke_cli(["model", "add", "http://127.0.0.1:9/m.bin", *args], env=env, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)


def test_across_file_systems_a_copy_is_made_said_and_known_again(server: ModelServer, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_links(*args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    url = server.add("/m.safetensors", Served(BODY))
    project = make_project(tmp_path / "p", pin_text(url))
    env = env_for(tmp_path)
    result = invoke_cli(["fetch"], env=env, cwd=project)
    assert result.returncode == 0 and "a copy, not a link" in result.stdout, result.stderr
    placed = project / "ComfyUI" / "models" / "checkpoints" / "m.safetensors"
    assert placed.read_bytes() == BODY and placed.stat().st_nlink == 1
    assert "already there" in invoke_cli(["fetch"], env=env, cwd=project).stdout
    removed = invoke_cli(["model", "remove", "sd15"], env=env, cwd=project)
    assert "deleted" in removed.stdout and not placed.exists()


def test_a_users_file_at_a_pinned_path_is_left_alone(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m.safetensors", Served(BODY))
    project = make_project(tmp_path / "p", pin_text(url))
    mine = project / "ComfyUI" / "models" / "checkpoints" / "m.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own model")
    env = env_for(tmp_path)
    result = invoke_cli(["fetch"], env=env, cwd=project)
    assert result.returncode == 7 and "left alone" in result.stderr and mine.read_bytes() == b"my own model"
    forced = invoke_cli(["fetch", "--force"], env=env, cwd=project)
    assert forced.returncode == 0 and mine.read_bytes() == BODY


def test_hf_endpoint_fetches_from_the_mirror_without_the_token(server: ModelServer, tmp_path: Path) -> None:
    server.add("/org/repo/resolve/main/m.safetensors", Served(BODY))
    hub = "https://huggingface.co/org/repo/resolve/main/m.safetensors"
    project = make_project(tmp_path / "p", f'\n[models]\nhf-endpoint = "{server.url}"\n' + pin_text(hub))
    result = invoke_cli(["fetch"], env=env_for(tmp_path, HF_TOKEN="hf_secret"), cwd=project)
    assert result.returncode == 0, result.stderr
    assert [path for path, _ in server.requests] == ["/org/repo/resolve/main/m.safetensors"]
    assert "Authorization" not in server.requests[0][1]  # a mirror gets no token
    assert hub in (project / "envbuild.toml").read_text()  # the pin keeps the canonical URL


def test_help_imports_neither_rich_nor_httpx() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "envbuild", "model", "--help"],
                          capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "envbuild.cli.options" in imported  # the command module was loaded (it imports options)
    assert "rich" not in imported and "httpx" not in imported


def test_ctrl_c_stops_every_parallel_download_and_keeps_the_partials(server: ModelServer, tmp_path: Path) -> None:
    import time

    from envbuild.deploy.deployment import load_deployment
    from envbuild.env.models import fetch_models

    fast = server.add("/fast.safetensors", Served(BODY))
    slow = server.add("/slow.safetensors", Served(BODY[:4000], drip=0.01))  # ~40 s in all
    slow_sha = hashlib.sha256(BODY[:4000]).hexdigest()
    project = make_project(tmp_path / "p", pin_text(fast, name="fast")
                           + pin_text(slow, name="slow", sha=slow_sha, size=4000))
    deployment = load_deployment(project, env_for(tmp_path))

    def ctrl_c(name: str, done: int, total: int | None) -> None:
        if name == "fast" and done > 1024 * 1024:
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fetch_models(deployment, jobs=2, on_progress=ctrl_c)
    assert time.monotonic() - started < 10
    partials = {p.name: p.stat().st_size for p in (tmp_path / "cache" / "models" / "partial").glob("*.part")}
    assert partials[f"{SHA}.part"] > 1024 * 1024 and 0 < partials[f"{slow_sha}.part"] < 4000


def test_a_redirect_loop_is_a_clear_failure(server: ModelServer, tmp_path: Path) -> None:
    loop = server.add("/a", Served())
    server.files["/a"] = Served(redirect=loop)
    with pytest.raises(DownloadFailure, match="redirected too many times"):
        download(loop, tmp_path / "store", limits=FAST)


def test_without_a_pin_a_resume_is_only_of_the_same_file(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m", Served(BODY, drop_after=1_000_000, drops=1))
    with pytest.raises(KeyboardInterrupt):  # `model add` interrupted: no sha256 known yet
        download(url, tmp_path / "store", limits=FAST,
                 progress=lambda done, total: (_ for _ in ()).throw(KeyboardInterrupt) if done >= 500_000 else None)
    changed = os.urandom(len(BODY))
    server.files["/m"] = Served(changed)  # the file changed on the server before the next run
    fetched = download(url, tmp_path / "store", limits=FAST)
    assert fetched.sha256 == hashlib.sha256(changed).hexdigest()  # If-Range: the whole new file, no mix
    assert server.requests[-1][1].get("If-Range") is not None and fetched.resumed_from > 0


def test_without_a_pin_or_a_validator_nothing_is_resumed(tmp_path: Path, server: ModelServer) -> None:
    url = server.add("/m", Served(BODY))
    partial = tmp_path / "store" / "partial" / f"{hashlib.sha256(url.encode()).hexdigest()}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 1000)  # from who knows which file
    fetched = download(url, tmp_path / "store", limits=FAST)
    assert fetched.sha256 == SHA and fetched.resumed_from == 0


def test_the_environments_hf_endpoint_is_honoured(server: ModelServer, tmp_path: Path) -> None:
    server.add("/org/repo/resolve/main/m.safetensors", Served(BODY))
    project = make_project(tmp_path / "p", pin_text("https://huggingface.co/org/repo/resolve/main/m.safetensors"))
    result = invoke_cli(["fetch"], env=env_for(tmp_path, HF_ENDPOINT=server.url + "/"), cwd=project)
    assert result.returncode == 0, result.stderr
    other = make_project(tmp_path / "q", pin_text("https://huggingface.co/org/repo/resolve/main/m.safetensors"))
    bad = invoke_cli(["fetch"], env=env_for(tmp_path / "b", HF_ENDPOINT="https://u:s3cr3t@mirror"), cwd=other)
    assert bad.returncode == 2 and "HF_ENDPOINT" in bad.stderr and "s3cr3t" not in bad.stderr


def test_run_names_pinned_models_not_in_place(server: ModelServer, tmp_path: Path) -> None:
    from envbuild.deploy.deployment import load_deployment
    from envbuild.env.run import missing_models

    url = server.add("/m.safetensors", Served(BODY))
    project = make_project(tmp_path / "p", pin_text(url))
    assert missing_models(load_deployment(project, env_for(tmp_path))) == ["sd15"]
    assert invoke_cli(["fetch"], env=env_for(tmp_path), cwd=project).returncode == 0
    assert missing_models(load_deployment(project, env_for(tmp_path))) == []


def test_a_matching_file_put_there_by_hand_joins_the_store(server: ModelServer, tmp_path: Path) -> None:
    url = server.add("/m.safetensors", Served(BODY))
    project = make_project(tmp_path / "p", pin_text(url))
    mine = project / "ComfyUI" / "models" / "checkpoints" / "m.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(BODY)
    result = invoke_cli(["fetch"], env=env_for(tmp_path), cwd=project)
    assert result.returncode == 0 and "already there" in result.stdout and "/m.safetensors" not in server.sent
    assert os.path.samefile(mine, tmp_path / "cache" / "models" / "sha256" / SHA)

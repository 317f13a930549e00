"""The core pipeline end to end: merge → profile pyproject → real `uv lock` → real `uv sync`.

Every test runs the real CLI in its own process against the loopback index (fake PyPI at
/simple, fake download.pytorch.org at /whl/...), with its own uv cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.deploy import (
    Deployment,
    locked_versions,
    make_deployment,
    run_cli,
    torch_in_venv,
)


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site")


def test_lock_and_sync_two_profiles_then_switch(deployment: Deployment, uv_env: dict[str, str], index_server) -> None:
    for profile, local in (("cu126", "cu126"), ("cu128", "cu128")):
        result = run_cli(["lock", "--profile", profile], env=uv_env, cwd=deployment.root)
        assert result.returncode == 0, result
        assert f"{profile}: locked" in result.stdout
        folder = deployment.locks / profile
        assert (folder / "pyproject.toml").is_file() and (folder / "uv.lock").is_file()
        versions = locked_versions(folder / "uv.lock")
        assert versions["torch"][0].endswith(f"+{local}")
        assert versions["torch"][1] == f"{index_server.pytorch_base}/{profile}"
        assert "hash = \"sha256:" in (folder / "uv.lock").read_text()

    # One venv, switched from cu126 to cu128: torch must really be replaced.
    for profile, cuda in (("cu126", "12.6"), ("cu128", "12.8")):
        result = run_cli(["sync", "--profile", profile, "--venv", str(deployment.venv)], env=uv_env,
                         cwd=deployment.root)
        assert result.returncode == 0, result
        assert f"(CUDA {cuda})" in result.stdout and "matches the profile" in result.stdout
        version, torch_cuda = torch_in_venv(deployment.venv)
        assert torch_cuda == cuda
        assert version.endswith(f"+{profile}")


def test_default_venv_is_beside_the_checkout_and_cuda_flag_finds_profile(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    assert run_cli(["lock", "--cuda", "12.6"], env=uv_env, cwd=deployment.root).returncode == 0
    result = run_cli(["sync", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert torch_in_venv(deployment.root / ".venv")[1] == "12.6"
    assert not (deployment.comfyui / ".venv").exists()


def test_packages_planted_on_the_torch_index_are_never_picked(
    deployment: Deployment, uv_env: dict[str, str], index_server
) -> None:
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    versions = locked_versions(deployment.locks / "cu126" / "uv.lock")
    # numpy 99 and filelock 99 sit on every torch index; PyPI has the real ones.
    assert versions["numpy"] == ("2.1.0", index_server.pypi_url)
    assert versions["filelock"] == ("3.16.1", index_server.pypi_url)
    # torch 99 sits on the default index; the torch family never leaves the profile's index.
    for name in ("torch", "torchvision"):
        assert versions[name][1] == f"{index_server.pytorch_base}/cu126", name
    assert "torchaudio" not in versions  # cu126's torch reaches 2.14, and torchaudio's last line is 2.11
    pyproject = (deployment.locks / "cu126" / "pyproject.toml").read_text()
    assert "explicit = true" in pyproject
    assert 'torch = {index = "pytorch-cu126"}' in pyproject


def test_nightly_takes_pytorch_triton_from_the_nightly_index(
    deployment: Deployment, uv_env: dict[str, str], index_server
) -> None:
    result = run_cli(["lock", "--profile", "nightly-cu132"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    versions = locked_versions(deployment.locks / "nightly-cu132" / "uv.lock")
    nightly = f"{index_server.pytorch_base}/nightly/cu132"
    assert versions["torch"] == ("2.16.0.dev20261201+cu132", nightly)
    # The planted pytorch-triton 99 on the default index (the 2022 torchtriton attack) is not used.
    assert versions["pytorch-triton"] == ("3.6.0+git11ec6354", nightly)
    assert "torchaudio" not in versions  # no torchaudio line for the nightly torch
    result = run_cli(["sync", "--profile", "nightly-cu132", "--venv", str(deployment.venv)], env=uv_env,
                     cwd=deployment.root)
    assert result.returncode == 0, result
    assert torch_in_venv(deployment.venv) == ("2.16.0.dev20261201+cu132", "13.2")


def test_generated_pyproject_is_byte_identical_across_runs_and_checkouts(
    tmp_path: Path, uv_env: dict[str, str]
) -> None:
    first = make_deployment(tmp_path / "one")
    second = make_deployment(tmp_path / "elsewhere" / "two")
    for site in (first, second):
        assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0
    a = (first.locks / "cu126" / "pyproject.toml").read_bytes()
    b = (second.locks / "cu126" / "pyproject.toml").read_bytes()
    assert a == b
    # Re-rendering from scratch gives the same bytes again, and uv accepts the lock as current.
    shutil.rmtree(first.locks)
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=first.root).returncode == 0
    assert (first.locks / "cu126" / "pyproject.toml").read_bytes() == a
    assert (first.locks / "cu126" / "uv.lock").read_bytes() == (second.locks / "cu126" / "uv.lock").read_bytes()


def test_unchanged_inputs_do_not_run_uv(deployment: Deployment, uv_env: dict[str, str]) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    before = deployment.snapshot_locks()
    no_uv = dict(uv_env, ENVBUILD_UV=str(deployment.root / "no-such-uv"))
    result = run_cli(["lock", "--profile", "cu126"], env=no_uv, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "cu126: current (locks/cu126, 11 packages; uv not run)" in result.stdout, result
    assert deployment.snapshot_locks() == before
    # A comment in a requirement file is not a change either.
    with (deployment.comfyui / "requirements.txt").open("a") as handle:
        handle.write("# a comment\n\n")
    assert "cu126: current (locks/cu126, 11 packages; uv not run)" in run_cli(
        ["lock", "--profile", "cu126"], env=no_uv, cwd=deployment.root).stdout


def test_failed_lock_leaves_the_previous_lock_untouched(deployment: Deployment, uv_env: dict[str, str]) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    before = deployment.snapshot_locks()
    deployment.add_node("broken-node", "no-such-package-anywhere>=1\n")
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 6, result
    assert "no-such-package-anywhere" in result.stderr
    assert "Traceback" not in result.output
    assert deployment.snapshot_locks() == before
    scratch = [p.name for p in deployment.locks.iterdir() if p.name.startswith(".")]
    assert sorted(scratch) == [".cu126.lock", ".gitignore"], "staging left behind"
    assert (deployment.locks / ".gitignore").read_text().splitlines()[1:] == [".*", "!.gitignore"]


def test_stale_lock_is_refused_by_sync_with_the_reason(deployment: Deployment, uv_env: dict[str, str]) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    with (deployment.comfyui / "requirements.txt").open("a") as handle:
        handle.write("six\n")
    result = run_cli(["sync", "--profile", "cu126", "--venv", str(deployment.venv)], env=uv_env,
                     cwd=deployment.root)
    assert result.returncode == 4, result
    assert "out of date" in result.stderr and "ComfyUI/requirements.txt changed" in result.stderr
    assert "envbuild lock --profile cu126" in result.stderr
    assert not deployment.venv.exists()


def test_sync_from_committed_files_only(deployment: Deployment, uv_env: dict[str, str], tmp_path: Path) -> None:
    """A fresh machine has the locks folder, not the ComfyUI checkout: sync must not need it."""
    assert run_cli(["lock", "--profile", "cu128"], env=uv_env, cwd=deployment.root).returncode == 0
    fresh = tmp_path / "fresh-machine"
    shutil.copytree(deployment.locks, fresh / "locks")
    venv = fresh / "venv"
    result = run_cli(["sync", "--profile", "cu128", "--venv", str(venv)], env=uv_env, cwd=fresh)
    assert result.returncode == 0, result
    assert torch_in_venv(venv)[1] == "12.8"
    # A hand-edited pyproject is caught before uv runs, and reported without a traceback.
    pyproject = fresh / "locks" / "cu128" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"einops",', '"einops>=0.1",'))
    result = run_cli(["sync", "--profile", "cu128", "--venv", str(venv)], env=uv_env, cwd=fresh)
    assert result.returncode == 5, result
    assert "cannot be trusted" in result.stderr and "pyproject.toml differs from what envbuild wrote" in result.stderr
    assert "Traceback" not in result.output
    # Without envbuild's record, uv's own --locked check still refuses the edited pair.
    (fresh / "locks" / "cu128" / "envbuild-lock.json").unlink()
    result = run_cli(["sync", "--profile", "cu128", "--venv", str(venv)], env=uv_env, cwd=fresh)
    assert result.returncode == 4 and "out of date" in result.stderr, result


def test_sync_without_a_lock_says_how_to_make_one(deployment: Deployment, uv_env: dict[str, str]) -> None:
    result = run_cli(["sync", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 4, result
    assert "no lock for profile cu126" in result.stderr
    assert "envbuild lock --profile cu126" in result.stderr


def test_sync_fails_when_torch_contradicts_the_profile(deployment: Deployment, uv_env: dict[str, str]) -> None:
    """A profile that claims CUDA 12.8 but points at the cu126 index: the check must catch it."""
    profiles = deployment.root / "profiles"
    profiles.mkdir()
    (profiles / "liar.toml").write_text(
        'name = "liar"\naccelerator = "cuda"\naccelerator-version = "12.8"\nlocal-version = "cu128"\n'
        '[index]\nname = "pytorch-liar"\nurl = "https://download.pytorch.org/whl/cu126"\n'
        '[packages]\ntorch = ">=2.7"\ntorchvision = ">=0.22"\ntorchaudio = ">=2.7"\n',
        encoding="utf-8",
    )
    assert run_cli(["lock", "--profile", "liar"], env=uv_env, cwd=deployment.root).returncode == 0
    result = run_cli(["sync", "--profile", "liar", "--venv", str(deployment.venv)], env=uv_env,
                     cwd=deployment.root)
    assert result.returncode == 7, result
    assert "wants CUDA 12.8, but torch 2.7.1+cu126 was built for CUDA 12.6" in result.stderr
    # --no-verify skips the check (the venv is built as locked).
    result = run_cli(["sync", "--profile", "liar", "--venv", str(deployment.venv), "--no-verify"], env=uv_env,
                     cwd=deployment.root)
    assert result.returncode == 0, result


def test_node_pinning_old_torch_is_an_error_naming_the_node(deployment: Deployment, uv_env: dict[str, str]) -> None:
    deployment.add_node("ComfyUI-OldTorch", "einops\ntorch==2.1.0\n")
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 2, result
    assert "node ComfyUI-OldTorch" in result.stderr
    assert "data/custom_nodes/ComfyUI-OldTorch/requirements.txt:2" in result.stderr
    assert "Traceback" not in result.output
    assert not deployment.locks.exists()


def test_conflicting_pins_name_both_files_before_uv_runs(deployment: Deployment, uv_env: dict[str, str]) -> None:
    deployment.add_node("node-a", "numpy<2\n")
    deployment.add_node("node-b", "numpy>=2\n")
    no_uv = dict(uv_env, ENVBUILD_UV=str(deployment.root / "no-such-uv"))
    result = run_cli(["lock", "--profile", "cu126"], env=no_uv, cwd=deployment.root)
    assert result.returncode == 2, result
    assert "conflicting requirements for numpy" in result.stderr
    assert "node-a/requirements.txt:1" in result.stderr and "node-b/requirements.txt:1" in result.stderr
    assert "--exclude-node" in result.stderr
    # Leaving one node out resolves it.
    result = run_cli(["lock", "--profile", "cu126", "--exclude-node", "node-b"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result


def test_merge_explain_names_file_and_line(deployment: Deployment, uv_env: dict[str, str]) -> None:
    deployment.add_node("ComfyUI-GGUF", "gguf>=0.9.1\nnumpy<2.0.0\n")
    result = run_cli(["merge", "--cuda", "12.6", "--explain"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    numpy = lines.index("numpy<2.0.0,>=1.25.0")
    assert "ComfyUI/requirements.txt:4 (ComfyUI)" in lines[numpy + 1]
    assert "data/custom_nodes/ComfyUI-GGUF/requirements.txt:2 (node ComfyUI-GGUF)" in lines[numpy + 2]
    assert "pip" in lines  # the Manager shells out to pip: envbuild adds it
    torch = lines.index("torch<2.15,>=2.6.0")
    assert "profiles/cu126.toml" in result.stdout[result.stdout.index("torch<2.15,>=2.6.0"):]
    assert torch >= 0


def test_profiles_lists_and_unknown_profile_lists_valid_ones(deployment: Deployment, uv_env: dict[str, str]) -> None:
    result = run_cli(["profiles"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0
    for name in ("cpu", "cu124", "cu126", "cu128", "cu130", "cu132", "cu132-pypi", "nightly-cu132", "rocm6.3",
                 "rocm7.2", "rocm7.14", "xpu", "mps"):
        assert any(line.split()[0] == name for line in result.stdout.splitlines()), name
    result = run_cli(["lock", "--cuda", "11.1"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 2
    assert "no profile for CUDA `11.1`" in result.stderr and "12.4, 12.6, 12.8, 13.0, 13.2" in result.stderr
    result = run_cli(["lock", "--profile", "cu999"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 2 and "unknown profile `cu999`" in result.stderr


def test_cpu_and_rocm_profiles(deployment: Deployment, uv_env: dict[str, str]) -> None:
    for profile, expect in (("cpu", (None, "+cpu")), ("rocm6.3", (None, "+rocm6.3"))):
        assert run_cli(["lock", "--profile", profile], env=uv_env, cwd=deployment.root).returncode == 0
        venv = deployment.root / f"venv-{profile}"
        result = run_cli(["sync", "--profile", profile, "--venv", str(venv)], env=uv_env, cwd=deployment.root)
        assert result.returncode == 0, result
        version, cuda = torch_in_venv(venv)
        assert cuda is expect[0] and version.endswith(expect[1])
    assert "ROCm/HIP 6.3" in result.stdout


def test_missing_config_says_what_to_give(tmp_path: Path, uv_env: dict[str, str]) -> None:
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=tmp_path)
    assert result.returncode == 2, result
    assert f"no deployment here: no envbuild.toml in {tmp_path} or a folder above it, and no --comfyui" \
        in result.stderr, result
    assert "envbuild init" in result.stderr and "--comfyui PATH" in result.stderr
    # An envbuild.toml that names no ComfyUI: said, with the key to set.
    (tmp_path / "envbuild.toml").write_text("", encoding="utf-8")
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "envbuild.toml: no ComfyUI checkout given" in result.stderr and "--comfyui PATH" in result.stderr


def test_comfyui_flag_works_without_a_config(tmp_path: Path, uv_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site", manager=None)
    (site.root / "envbuild.toml").unlink()
    result = run_cli(["lock", "--profile", "cu126", "--comfyui", "ComfyUI"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    assert (site.root / "locks" / "cu126" / "uv.lock").is_file()


def test_verbose_shows_the_exact_uv_command(deployment: Deployment, uv_env: dict[str, str]) -> None:
    result = run_cli(["-v", "lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "envbuild: $ " in result.stderr and " lock --project " in result.stderr


def test_lock_check_is_offline_and_names_what_changed(deployment: Deployment, uv_env: dict[str, str]) -> None:
    node = deployment.add_node("ComfyUI-KJNodes", "six\n")
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    offline = dict(uv_env, ENVBUILD_UV="/nonexistent", UV_DEFAULT_INDEX="http://127.0.0.1:9/none",
                   ENVBUILD_PYTORCH_INDEX=uv_env["ENVBUILD_PYTORCH_INDEX"])
    result = run_cli(["lock", "--check", "--profile", "cu126"], env=offline, cwd=deployment.root)
    assert result.returncode == 0 and "cu126: current" in result.stdout, result
    (node / "requirements.txt").write_text("six>=1.16\n")
    result = run_cli(["lock", "--check", "--all"], env=offline, cwd=deployment.root)
    assert result.returncode == 4, result
    assert "cu126: stale (locks/cu126): data/custom_nodes/ComfyUI-KJNodes/requirements.txt changed" in result.stderr
    assert "cu128: missing (locks/cu128): no lock folder" in result.stderr
    assert "error: 2 of 2 lock(s) not current; run `envbuild lock --all`" in result.stderr
    # A deployment-level profile that changes cu126's torch range is named as such.
    (node / "requirements.txt").write_text("six\n")
    profiles = deployment.root / "profiles"
    profiles.mkdir()
    from envbuild.torch.catalogue import builtin_profiles_dir

    text = (builtin_profiles_dir() / "cu126.toml").read_text().replace('torch = ">=2.6.0,<2.15"', 'torch = ">=2.7.0,<2.15"')
    (profiles / "cu126.toml").write_text(text)
    result = run_cli(["lock", "--check", "--profile", "cu126"], env=offline, cwd=deployment.root)
    assert result.returncode == 4 and "profile cu126 changed" in result.stderr, result


def test_exclude_node_typo_and_disabled_manager_are_said(deployment: Deployment, uv_env: dict[str, str]) -> None:
    deployment.add_node("ComfyUI-KJNodes", "six\n")
    result = run_cli(["merge", "--profile", "cu126", "--exclude-node", "ComfyUI-KJNode"], env=uv_env,
                     cwd=deployment.root)
    assert result.returncode == 0, result
    assert "--exclude-node comfyui-kjnode: no custom node of that name" in result.stderr
    assert "six" in result.stdout.splitlines()
    with (deployment.root / "envbuild.toml").open("a") as handle:
        handle.write("\n[manager]\nenabled = false\n")
    result = run_cli(["merge", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert "comfyui-manager (the Manager; [manager] enabled = false)" in result.stderr
    assert "pip" not in result.stdout.splitlines()


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`envbuild profiles | head -1`: no "internal error", no traceback; 141 like a tool killed by SIGPIPE."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before envbuild writes a byte
    proc = subprocess.run([sys.executable, "-m", "envbuild", "profiles"], stdout=write_end, stderr=subprocess.PIPE,
                          text=True, cwd=tmp_path, timeout=60)
    os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_exit_codes_and_output_survive_the_fast_exit(tmp_path: Path) -> None:
    """main() ends the process without interpreter teardown: codes and every printed byte must still arrive."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "envbuild", "profiles"], capture_output=True, text=True,
                        cwd=tmp_path, timeout=60)
    assert ok.returncode == 0 and "cu126" in ok.stdout and ok.stdout.endswith("\n")
    (tmp_path / "envbuild.toml").write_text("", encoding="utf-8")  # sync works from locks/ alone
    bad = subprocess.run([sys.executable, "-m", "envbuild", "sync", "--profile", "cu999"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert bad.returncode == 2 and "unknown profile `cu999`" in bad.stderr, bad.stderr
    assert bad.stderr.endswith("(see `envbuild profiles`)\n"), bad.stderr
    usage = subprocess.run([sys.executable, "-m", "envbuild", "no-such-command"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)
    assert usage.returncode == 2 and "No such command" in usage.stderr


def test_a_broken_profile_file_breaks_only_the_commands_that_read_it(tmp_path: Path) -> None:
    """Profiles are read on demand: a bad deployment cu128.toml leaves a cu126 merge alone, but listing
    the profiles reads every file and names the broken one."""
    d = make_deployment(tmp_path / "site")
    (d.root / "profiles").mkdir()
    (d.root / "profiles" / "cu128.toml").write_text('name = "cu128"\naccelerator = \n', encoding="utf-8")
    merged = run_cli(["merge", "--profile", "cu126"], env=_plain_env(), cwd=d.root)
    assert merged.returncode == 0, merged
    assert "torch" in merged.stdout
    listed = run_cli(["profiles"], env=_plain_env(), cwd=d.root)
    assert listed.returncode == 2 and "profiles/cu128.toml" in listed.stderr, listed
    assert "Traceback" not in listed.stderr
    used = run_cli(["merge", "--profile", "cu128"], env=_plain_env(), cwd=d.root)
    assert used.returncode == 2 and "profiles/cu128.toml" in used.stderr, used


def _plain_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "ENVBUILD_"))}

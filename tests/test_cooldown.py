"""The cooldown (`[lock] exclude-newer`): uv's grammar, the render, and the lock end to end.

The end-to-end tests publish `coolpkg` 1.0.0 (30 days old) and 2.0.0 (uploaded yesterday) on the loopback
PyPI, with PEP 700 upload times, and run the real uv.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest

from envbuild.core.errors import ConfigError
from envbuild.settings.cooldown import DEFAULT_COOLDOWN, Cooldown, parse_cooldown
from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli
from tests.support.wheels import build_wheel

DAY = 86400
NOW = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)


# -- the grammar ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("7 days", 7 * DAY), ("1 week", 7 * DAY), ("24 hours", DAY), ("1w", 7 * DAY), ("7d", 7 * DAY),
    ("7days", 7 * DAY), ("2 days 12 hours", 2 * DAY + 12 * 3600), ("1 week, 2 days", 9 * DAY),
    ("90 minutes", 5400), ("30 seconds", 30), ("3 hrs", 3 * 3600), ("5 mins", 300), ("0 days", 0),
    ("P7D", 7 * DAY), ("P1W", 7 * DAY), ("PT36H", 36 * 3600), ("P1DT12H", DAY + 12 * 3600), ("P1W2D", 9 * DAY),
])
def test_spans_uv_accepts_are_read_in_seconds(text: str, seconds: int) -> None:
    """Each of these was accepted by uv 0.13.9 (measured: recorded as `exclude-newer-span`)."""
    assert parse_cooldown(text, None) == Cooldown(span=seconds)


@pytest.mark.parametrize("text", [
    "1 month", "P1M", "1 year", "7 Days", "1.5 days", "1 day 1 day", "1 fortnight", "7 days ago", "-7 days",
    "2 days 1 week", "", "days", "P", "PT", "2026-12-01 00:00:00Z", "2026-13-01", "yesterday", "7",
])
def test_what_uv_refuses_or_what_is_no_cooldown_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="exclude-newer"):
        parse_cooldown(text, None)


def test_dates_and_times_are_fixed_utc_moments() -> None:
    # uv reads a date as through the end of that day (measured: "2026-12-01" -> 2026-12-02T00:00:00Z),
    # in local time; envbuild says UTC and renders the moment, so no machine's time zone matters.
    assert parse_cooldown("2026-12-01", None) == Cooldown(span=None, fixed="2026-12-02T00:00:00Z")
    assert parse_cooldown("2026-12-01T00:00:00+02:00", None) == Cooldown(span=None, fixed="2026-11-30T22:00:00Z")
    fixed = parse_cooldown("2026-12-01T08:30:00Z", None)
    assert fixed is not None and fixed.cutoff(NOW) == "2026-12-01T08:30:00Z" and fixed.text == "2026-12-01T08:30:00Z"


def test_false_switches_it_off_and_other_types_are_refused() -> None:
    assert parse_cooldown(False, None) is None
    for value in (True, 7, ["7 days"]):
        with pytest.raises(ConfigError, match="must be a string or false"):
            parse_cooldown(value, None)


def test_one_setting_has_one_spelling_and_a_span_resolves_against_the_given_moment() -> None:
    week, days = parse_cooldown("1 week", None), parse_cooldown("7 days", None)
    assert week == days == DEFAULT_COOLDOWN and days is not None and days.text == "7 days"
    mixed = parse_cooldown("P1DT12H", None)
    assert mixed is not None and mixed.text == "1 day 12 hours"
    assert days.cutoff(NOW) == "2026-11-29T00:00:00Z"  # rounded down to the day: at least 7 days
    assert Cooldown(span=36 * 3600).cutoff(NOW) == "2026-12-05T00:00:00Z"
    assert Cooldown(span=5400).cutoff(NOW) == "2026-12-06T10:00:00Z"
    assert Cooldown(span=30).cutoff(NOW + datetime.timedelta(seconds=59)) == "2026-12-06T12:00:29Z"
    assert Cooldown(span=0).cutoff(NOW) == "2026-12-06T12:00:00Z"


def test_a_bad_value_in_envbuild_toml_names_file_and_line(tmp_path: Path) -> None:
    from envbuild.settings.config import load_config

    (tmp_path / "envbuild.toml").write_text(
        '[comfyui]\npath = "ComfyUI"\n\n[ lock ]  # the cooldown\n# exclude-newer = "7 days"\n'
        'profiles = ["cpu"]\nexclude-newer = "1 month"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert f"{tmp_path / 'envbuild.toml'}:7: `lock.exclude-newer = '1 month'` is not a duration" in str(caught.value)
    assert caught.value.hint is not None and '"7 days"' in caught.value.hint


def test_the_default_is_seven_days_and_false_in_the_file_turns_it_off(tmp_path: Path) -> None:
    from envbuild.settings.config import load_config

    assert load_config(tmp_path).exclude_newer == DEFAULT_COOLDOWN
    (tmp_path / "envbuild.toml").write_text("[lock]\nexclude-newer = false\n", encoding="utf-8")
    assert load_config(tmp_path).exclude_newer is None


# -- the render ----------------------------------------------------------------------------------------

def _render(exclude_newer: str | None, exact_pins: tuple[str, ...] = (), profile_name: str = "cu126") -> str:
    from envbuild.pkgs.merging import merge
    from envbuild.pkgs.requirements import parse_requirements_text
    from envbuild.torch.catalogue import load_catalogue
    from envbuild.uv.render import RenderInput, render_pyproject

    profile = load_catalogue(()).get(profile_name)
    lines = parse_requirements_text("torch\npyyaml==6.0.2\nnumpy>=1.25\n", path=Path("requirements.txt"),
                                    source="ComfyUI")
    return render_pyproject(RenderInput(
        merged=merge(lines.requirements), profile=profile, requires_python=">=3.10",
        index_url=profile.index_url, input_paths=["ComfyUI/requirements.txt"], exclude_newer=exclude_newer,
        exact_pins=exact_pins))


def test_the_cutoff_renders_as_uvs_own_setting_with_exact_pins_and_the_index_exempt() -> None:
    text = _render("2026-11-29T12:00:00Z", ("pyyaml",))
    assert 'exclude-newer = "2026-11-29T12:00:00Z"\n' in text
    assert ("exclude-newer-package = {pyyaml = false, torch = false, torchaudio = false, torchvision = false}\n"
            in text)
    assert "# Cooldown: files uploaded before 2026-11-29T12:00:00Z" in text
    assert text == _render("2026-11-29T12:00:00Z", ("pyyaml",))  # byte for byte, every time


def test_a_pypi_profile_exempts_its_torch_family_too() -> None:
    text = _render("2026-11-29T12:00:00Z", ("pyyaml",), "cu130-pypi")
    exempt = next(line for line in text.splitlines() if line.startswith("exclude-newer-package = "))
    assert "pyyaml = false" in exempt and "torch = false" in exempt and "torchvision = false" in exempt


def test_no_cooldown_renders_nothing_of_it() -> None:
    text = _render(None, ("pyyaml",))
    assert "exclude-newer" not in text and "Cooldown" not in text


def test_exact_pins_are_single_versions_only() -> None:
    from envbuild.comfy.inputs import MergedInputs
    from envbuild.lock.plan import exact_pins
    from envbuild.pkgs.merging import merge
    from envbuild.pkgs.requirements import parse_requirements_text

    lines = parse_requirements_text(
        "comfyui-frontend-package==1.34.9\nComfy_Kitchen===0.2.36\nav==14.*\nnumpy>=1.25\nspandrel\n",
        path=Path("requirements.txt"), source="ComfyUI")
    merged = MergedInputs(merge(lines.requirements), (), (), None)  # type: ignore[arg-type]
    assert exact_pins(merged) == ("comfy-kitchen", "comfyui-frontend-package")


def test_the_fingerprint_records_setting_and_cutoff_and_an_off_lock_keeps_its_bytes() -> None:
    from envbuild.pkgs.lockdir import Fingerprint

    base = Fingerprint("cpu", 3, ">=0.12.1", "pytorch-index", None, "p", "y", {})
    assert "exclude_newer" not in base.to_json() and "cutoff" not in base.to_json()
    cooled = base._replace(exclude_newer="7 days", cutoff="2026-11-29T12:00:00Z")
    assert Fingerprint.from_json(cooled.to_json()) == cooled


# -- end to end, real uv on the loopback index ------------------------------------------------------------

def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def cool_index(index_server: Catalogue, tmp_path: Path) -> Catalogue:
    """coolpkg 1.0.0 published 30 days ago, 2.0.0 yesterday; freshpkg 1.0.0 yesterday (the catalogue resets
    after the test)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    wheels = tmp_path / "cool-wheels"
    index_server.pypi.add(build_wheel(wheels, "coolpkg", "1.0.0"), upload_time=_iso(now - datetime.timedelta(30)))
    index_server.pypi.add(build_wheel(wheels, "coolpkg", "2.0.0"), upload_time=_iso(now - datetime.timedelta(1)))
    index_server.pypi.add(build_wheel(wheels, "freshpkg", "1.0.0"), upload_time=_iso(now - datetime.timedelta(1)))
    return index_server


def _site(tmp_path: Path, requirements: str = "coolpkg\npyyaml\n", lock_table: str = "") -> Deployment:
    deployment = make_deployment(tmp_path / "site", requirements=requirements, manager=None, profiles=("cpu",))
    deployment.write_config(f"""\
        [comfyui]
        path = "ComfyUI"
        base-directory = "data"
        [lock]
        profiles = ["cpu"]
        {lock_table}
        """)
    return deployment


def _coolpkg(deployment: Deployment) -> str:
    return locked_versions(deployment.locks / "cpu" / "uv.lock")["coolpkg"][0]


def _fingerprint(deployment: Deployment) -> dict[str, object]:
    data = json.loads((deployment.locks / "cpu" / "envbuild-lock.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.usefixtures("cool_index")
def test_a_release_from_yesterday_waits_out_the_default_cooldown_and_off_takes_it(
    tmp_path: Path, uv_env: dict[str, str]
) -> None:
    deployment = _site(tmp_path)
    result = run_cli(["lock", "--profile", "cpu"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert _coolpkg(deployment) == "1.0.0"
    recorded = _fingerprint(deployment)
    assert recorded["exclude_newer"] == "7 days" and isinstance(recorded["cutoff"], str)
    assert f'exclude-newer = "{recorded["cutoff"]}"' in (deployment.locks / "cpu" / "uv.lock").read_text()

    deployment.write_config("""\
        [comfyui]
        path = "ComfyUI"
        base-directory = "data"
        [lock]
        profiles = ["cpu"]
        exclude-newer = false
        """)
    check = run_cli(["lock", "--check"], env=uv_env, cwd=deployment.root)
    assert check.returncode == 4, check
    assert "cpu: stale (locks/cpu): lock.exclude-newer changed (7 days → off)" in check.stderr, check
    result = run_cli(["lock", "--profile", "cpu"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert _coolpkg(deployment) == "1.0.0"  # a re-lock keeps what still fits: lifting the cooldown upgrades nothing
    result = run_cli(["lock", "--profile", "cpu", "--upgrade"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert _coolpkg(deployment) == "2.0.0"
    assert "exclude-newer" not in (deployment.locks / "cpu" / "pyproject.toml").read_text()
    assert "exclude_newer" not in _fingerprint(deployment)


@pytest.mark.usefixtures("cool_index")
def test_an_exact_pin_is_not_held_back_by_the_cooldown(tmp_path: Path, uv_env: dict[str, str]) -> None:
    deployment = _site(tmp_path, requirements="coolpkg==2.0.0\npyyaml\n", lock_table='exclude-newer = "1 week"')
    result = run_cli(["lock", "--profile", "cpu"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert _coolpkg(deployment) == "2.0.0"
    exempt = [line for line in (deployment.locks / "cpu" / "pyproject.toml").read_text().splitlines()
              if line.startswith("exclude-newer-package = ")]
    assert exempt == ["exclude-newer-package = {coolpkg = false, torch = false, torchaudio = false, "
                      "torchvision = false}"]
    # without the exemption uv itself refuses the pin (measured: "`coolpkg` was filtered by `exclude-newer`")


@pytest.mark.usefixtures("cool_index")
def test_lock_check_does_not_read_the_clock_and_upgrade_moves_the_cutoff(
    tmp_path: Path, uv_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from envbuild.deploy.deployment import load_deployment
    from envbuild.lock.pipeline import lock_profile
    from envbuild.lock.trust import CURRENT, assess
    from envbuild.settings import cooldown

    deployment = _site(tmp_path)
    assert run_cli(["lock", "--profile", "cpu"], env=uv_env, cwd=deployment.root).returncode == 0
    cutoff = _fingerprint(deployment)["cutoff"]
    before = deployment.snapshot_locks()

    def no_clock() -> datetime.datetime:
        raise AssertionError("lock --check read the clock")

    monkeypatch.setattr(cooldown, "utc_now", no_clock)
    site = load_deployment(deployment.root, uv_env)
    found = assess(site, site.catalogue.get("cpu"), full=True)
    assert found.state == CURRENT, found
    result = run_cli(["lock", "--check"], env=uv_env, cwd=deployment.root)  # another process, the real clock
    assert result.returncode == 0 and "cpu: current" in result.stdout, result

    # 40 days later: a plain lock changes nothing, an upgrade moves the cutoff and takes 2.0.0.
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=40)
    monkeypatch.setattr(cooldown, "utc_now", lambda: later)
    assert lock_profile(site, site.catalogue.get("cpu"), stream=False).status == "up-to-date"
    assert deployment.snapshot_locks() == before
    upgraded = lock_profile(site, site.catalogue.get("cpu"), upgrade=True, stream=False)
    assert upgraded.status == "locked"
    moved = DEFAULT_COOLDOWN.cutoff(later)
    assert f"the cooldown's cutoff moved ({cutoff} → {moved})" in upgraded.reasons, upgraded
    assert _fingerprint(deployment)["cutoff"] == moved
    assert _coolpkg(deployment) == "2.0.0"
    monkeypatch.setattr(cooldown, "utc_now", no_clock)
    assert assess(load_deployment(deployment.root, uv_env), site.catalogue.get("cpu"), full=True).state == CURRENT

    # A cutoff edited into the fingerprint (to lift the cooldown) is not one envbuild writes: edited, not stale.
    recorded = deployment.locks / "cpu" / "envbuild-lock.json"
    recorded.write_text(recorded.read_text().replace(moved, "2099-01-01T13:37:00Z"))
    monkeypatch.setattr(cooldown, "utc_now", lambda: later)
    found = assess(load_deployment(deployment.root, uv_env), site.catalogue.get("cpu"), full=True)
    assert found.state == "edited", found
    assert any("records a cooldown cutoff envbuild does not write for '7 days'" in r for r in found.reasons), found


@pytest.mark.usefixtures("cool_index")
def test_a_requirement_only_new_releases_meet_fails_with_envbuilds_ways_out(
    tmp_path: Path, uv_env: dict[str, str]
) -> None:
    deployment = _site(tmp_path, requirements="coolpkg>=2\npyyaml\n")
    result = run_cli(["lock", "--profile", "cpu"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 6, result
    assert "uv lock failed: coolpkg: what the inputs ask for was uploaded after the cooldown's cutoff 20" in result.stderr
    assert "pin it exactly (`coolpkg==<version>`) in an input" in result.stderr, result
    assert not deployment.locks.joinpath("cpu").exists()


@pytest.mark.usefixtures("cool_index")
@pytest.mark.skipif(os.name != "posix", reason="update needs venv generations (POSIX)")
def test_update_moves_the_cutoff_even_without_upgrade(
    tmp_path: Path, uv_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node now asks for freshpkg, published yesterday: `lock` keeps the recorded cutoff and cannot take it;
    `update` (40 days later) moves the cutoff and can, keeping coolpkg where it was (no --upgrade)."""
    from envbuild.deploy.deployment import load_deployment
    from envbuild.env.update import update
    from envbuild.settings import cooldown

    deployment = _site(tmp_path)
    assert run_cli(["lock", "--profile", "cpu"], env=uv_env, cwd=deployment.root).returncode == 0
    deployment.add_node("fresh_node", "freshpkg\n")
    failed = run_cli(["lock", "--profile", "cpu"], env=uv_env, cwd=deployment.root)
    assert failed.returncode == 6 and "freshpkg: what the inputs ask for was uploaded after" in failed.stderr, failed
    before = deployment.snapshot_locks()
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=40)
    monkeypatch.setattr(cooldown, "utc_now", lambda: later)
    site = load_deployment(deployment.root, uv_env)
    result = update(site, site.catalogue.get("cpu"), deployment.venv, refs={}, dry_run=True, stream=False)
    assert result.status == "dry-run" and result.diff is not None
    changed = {d.name: (d.a, d.b) for d in result.diff.differences}
    assert set(changed) == {"freshpkg"} and changed["freshpkg"][0] is None, changed
    assert deployment.snapshot_locks() == before  # a dry run commits nothing


def test_a_recorded_cutoff_is_checked_for_form_and_rounding_without_a_clock() -> None:
    week = parse_cooldown("7 days", None)
    assert week is not None
    assert week.could_be("2026-11-29T00:00:00Z") and week.could_be(week.cutoff(NOW))
    for forged in ("2026-11-29T13:37:00Z", "2026-11-29", "2026-11-29T00:00:00+00:00", "soon", ""):
        assert not week.could_be(forged), forged
    hours = parse_cooldown("36 hours", None)
    assert hours is not None and hours.could_be("2026-11-29T00:00:00Z") and not hours.could_be("2026-11-29T05:00:00Z")
    assert parse_cooldown("90 minutes", None).could_be("2026-11-29T05:00:00Z")  # type: ignore[union-attr]
    fixed = parse_cooldown("2026-12-01", None)
    assert fixed is not None and fixed.could_be("2026-12-02T00:00:00Z") and not fixed.could_be("2026-12-03T00:00:00Z")


def test_an_upgrade_that_settles_a_variant_group_keeps_the_moved_cutoff(
    opencv_pypi: Catalogue, tmp_path: Path, uv_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second `uv lock` of a settled lock is planned again: with the upgrade's cutoff, not the folder's."""
    from envbuild.deploy.deployment import load_deployment
    from envbuild.lock.pipeline import lock_profile
    from envbuild.settings import cooldown

    deployment = make_deployment(tmp_path / "site", profiles=("cu126",))
    deployment.add_node("node_tool", "cvtool\n")
    deployment.add_node("node_head", "headtool\n")
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=40)
    monkeypatch.setattr(cooldown, "utc_now", lambda: later)
    site = load_deployment(deployment.root, uv_env)
    result = lock_profile(site, site.catalogue.get("cu126"), upgrade=True, stream=False)
    assert result.status == "locked" and result.settled, result
    folder = deployment.locks / "cu126"
    recorded = json.loads((folder / "envbuild-lock.json").read_text())
    assert recorded["cutoff"] == DEFAULT_COOLDOWN.cutoff(later) and recorded["settled"], recorded
    assert f'exclude-newer = "{recorded["cutoff"]}"' in (folder / "uv.lock").read_text()


@pytest.mark.usefixtures("cool_index")
def test_a_machines_uv_exclude_newer_does_not_override_the_deployments_cooldown(
    tmp_path: Path, uv_env: dict[str, str]
) -> None:
    """uv lets UV_EXCLUDE_NEWER win over the pyproject (then `uv sync --locked` refuses every lock): dropped."""
    deployment = _site(tmp_path)
    env = dict(uv_env, UV_EXCLUDE_NEWER="2 days")
    assert run_cli(["lock", "--profile", "cpu"], env=env, cwd=deployment.root).returncode == 0
    text = (deployment.locks / "cpu" / "uv.lock").read_text()
    assert "exclude-newer-span" not in text and f'exclude-newer = "{_fingerprint(deployment)["cutoff"]}"' in text
    synced = run_cli(["sync", "--profile", "cpu", "--dry-run"], env=env, cwd=deployment.root)
    assert synced.returncode == 0, synced


def test_the_shipped_locks_hold_a_cooldown_that_lets_comfyuis_own_pins_through() -> None:
    """The repository's locks (real PyPI): every `==` pin of the shipped requirement files is exempt, and the
    cutoff the fingerprint records is the one uv.lock holds."""
    import re

    root = Path(__file__).resolve().parents[1]
    pins = {re.sub(r"[-_.]+", "-", line.split("==")[0].strip().lower())
            for path in sorted((root / "deploy").rglob("*requirements.txt"))
            for line in path.read_text(encoding="utf-8").splitlines()
            if "==" in line and not line.lstrip().startswith("#")}
    assert pins, "the shipped deployment pins nothing exactly?"
    folders = [f for f in sorted((root / "locks").iterdir()) if (f / "uv.lock").is_file()]
    assert folders
    for folder in folders:
        recorded = json.loads((folder / "envbuild-lock.json").read_text(encoding="utf-8"))
        assert recorded["exclude_newer"] == "7 days", folder
        lock = (folder / "uv.lock").read_text(encoding="utf-8")
        assert f'[options]\nexclude-newer = "{recorded["cutoff"]}"\n' in lock, folder
        exempt = set(re.findall(r"^([a-z0-9-]+) = false$", lock.split("[options.exclude-newer-package]")[1]
                                .split("\n\n")[0], re.MULTILINE))
        assert pins <= exempt and "torch" in exempt, (folder, pins - exempt)


@pytest.mark.unit
def test_through_a_pypi_mirror_the_default_cooldown_is_off_and_an_explicit_one_applies(tmp_path: Path) -> None:
    """Most mirrors list no upload times: under any cutoff uv would drop every file (measured)."""
    from envbuild.deploy.deployment import load_deployment

    site = make_deployment(tmp_path / "site", profiles=("cu130-pypi",))
    mirrored = {"ENVBUILD_PYPI_MIRROR": "https://mirror.example/simple", "ENVBUILD_MIRROR_MODE": "lock"}
    for env, expected in (({}, DEFAULT_COOLDOWN), (mirrored, None)):
        deployment = load_deployment(site.root, env)
        assert deployment.cooldown(deployment.catalogue.get("cu130-pypi")) == expected
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write('exclude-newer = "3 days"\n')
    deployment = load_deployment(site.root, mirrored)
    cooldown = deployment.cooldown(deployment.catalogue.get("cu130-pypi"))
    assert cooldown is not None and cooldown.text == parse_cooldown("3 days", site.root / "envbuild.toml").text

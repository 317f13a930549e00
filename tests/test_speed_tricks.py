"""Where envbuild writes a rule twice for speed or for a place its package cannot go, the copies must
agree: property tests over generated inputs (issue: speed tricks that stay are tested)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from envbuild.settings.mirrors import rewrite_lock_text
from envbuild.torch.profile import canonical_name

pytestmark = pytest.mark.unit
MIRROR_SCRIPT = Path(__file__).resolve().parent.parent / "envbuild" / "data" / "image" / "mirror.py"


@given(st.text(alphabet="AaBbZz09-_.", min_size=1, max_size=30))
def test_canonical_name_is_packagings(name: str) -> None:
    """profile.canonical_name avoids importing packaging on the no-op path; it must not differ."""
    assert canonical_name(name) == canonicalize_name(name)


_SEGMENT = st.text(alphabet="abcxyz019.-", min_size=1, max_size=6)
_PREFIX = st.builds(lambda host, parts: "https://" + host + "".join("/" + p for p in parts), _SEGMENT,
                    st.lists(_SEGMENT, max_size=3))


@settings(max_examples=60, deadline=None)
@given(rules=st.lists(st.tuples(_PREFIX, _PREFIX), min_size=1, max_size=4, unique_by=lambda r: r[0]),
       tails=st.lists(st.lists(_SEGMENT, max_size=3), min_size=1, max_size=5),
       picks=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=5))
def test_the_images_mirror_script_rewrites_as_envbuild_does(rules: list[tuple[str, str]], tails: list[list[str]],
                                                           picks: list[int], tmp_path_factory: pytest.TempPathFactory,
                                                           ) -> None:
    """data/image/mirror.py runs inside the image, without envbuild: the same lock, rules and bytes out."""
    urls = [rules[i % len(rules)][0] + "".join("/" + part for part in tail)
            for i, tail in zip(picks, tails, strict=False)]
    text = "".join(f'url = "{url}", hash = "sha256:00"\n' for url in urls) + 'other = "https://elsewhere/x"\n'
    folder = tmp_path_factory.mktemp("mirror")
    (folder / "rules").write_text("".join(f"{old}\t{new}\n" for old, new in rules))
    (folder / "in").write_text(text)
    argv = sys.argv
    sys.argv = ["mirror.py", str(folder / "rules"), str(folder / "in"), str(folder / "out")]
    try:
        runpy.run_path(str(MIRROR_SCRIPT), run_name="__main__")
    finally:
        sys.argv = argv
    assert (folder / "out").read_text() == rewrite_lock_text(text, rules)


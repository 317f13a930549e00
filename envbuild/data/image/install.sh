#!/bin/sh
# Written by `envbuild image`: the install steps of the build stages (never in the runtime image).
# uv checks every file against the lock's sha256. The build secrets exist only while a step runs:
#   ca      a CA bundle for TLS through an intercepting proxy
#   uv-env  KEY='value' lines (UV_INDEX_* credentials, uv's index settings), sourced before uv runs
#   mirror  "canonical-prefix<TAB>mirror-prefix" lines: a copy of the lock whose file URLs point at
#           the mirror, every sha256 kept, is installed (as `envbuild sync` in mirror mode install)
set -eu
VENV=/opt/venv
if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi
if [ -s /run/secrets/uv-env ]; then set -a; . /run/secrets/uv-env; set +a; fi
mirror() {
  mkdir -p /tmp/mirror
  for file in "$@"; do
    python3 /envbuild-build/mirror.py /run/secrets/mirror "$file" "/tmp/mirror/$(basename "$file")"
  done
}
step=$1; shift
case "$step" in
  torch)
    # The torch layer: the torch family and what only it needs, from uv's export of the lock.
    uv venv --quiet --python "$(command -v python3)" "$VENV"
    pylock=/envbuild-build/torch/pylock.toml
    if [ -s /run/secrets/mirror ]; then mirror "$pylock"; pylock=/tmp/mirror/pylock.toml; fi
    VIRTUAL_ENV="$VENV" uv pip install --no-deps -r "$pylock"
    ;;
  rest)
    # The rest of the lock; the files it adds go to $VENV-rest, the runtime stage's second layer.
    list() { (cd "$VENV" && find . \( -type f -o -type l \) -printf '%p\t%s\t%T@\n' | LC_ALL=C sort); }
    list > /tmp/before
    skip=""
    for name in "$@"; do skip="$skip --no-install-package $name"; done
    how="--locked --project /envbuild-build/lock"
    if [ -s /run/secrets/mirror ]; then
      uv lock --check --offline --project /envbuild-build/lock  # the canonical lock matches its pyproject
      mirror /envbuild-build/lock/pyproject.toml /envbuild-build/lock/uv.lock
      how="--frozen --project /tmp/mirror"
    fi
    # shellcheck disable=SC2086
    uv sync $how --inexact --no-install-project $skip
    # The venv must now hold exactly the lock: a dry run that would change anything fails the build.
    # shellcheck disable=SC2086
    if uv sync $how --inexact --no-install-project --dry-run 2>&1 | grep -E '^ [-+~] '; then
      echo "envbuild image: the environment does not hold the lock" >&2; exit 1
    fi
    list > /tmp/after
    mkdir -p "$VENV-rest"
    LC_ALL=C comm -13 /tmp/before /tmp/after | cut -f1 > /tmp/changed
    tar -C "$VENV" -cf - -T /tmp/changed | tar -C "$VENV-rest" -xf -
    # The torch layer's packages must not be copied again (that would double the image).
    for name in "$@"; do
      if ls -d "$VENV"-rest/lib/python*/site-packages/"$(echo "$name" | tr - _)"-*.dist-info 2>/dev/null; then
        echo "envbuild image: $name was installed again outside the torch layer" >&2; exit 1
      fi
    done
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac

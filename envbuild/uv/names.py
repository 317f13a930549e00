"""Every uv environment variable envbuild reads, sets or drops, named once (no other layer spells a
`UV_*` name): what uv reads is uv knowledge, and a rename in uv is one edit here."""

from __future__ import annotations

OFFLINE = "UV_OFFLINE"  # read: the user asked uv (and so envbuild's index reads) to stay offline
PYTHON = "UV_PYTHON"  # set: the interpreter `uv pip` (the Manager's uv mode) installs into
PROJECT_ENVIRONMENT = "UV_PROJECT_ENVIRONMENT"  # set by sync; dropped for ComfyUI
CONSTRAINT = "UV_CONSTRAINT"  # the torch guard
FIND_LINKS = "UV_FIND_LINKS"  # the torch guard's PyTorch project pages
HTTP_TIMEOUT = "UV_HTTP_TIMEOUT"  # a mirror's timeout
EXCLUDE_NEWER = "UV_EXCLUDE_NEWER"  # dropped: the deployment's cooldown decides, not a machine's setting
DEFAULT_INDEX = ("UV_DEFAULT_INDEX", "UV_INDEX_URL")  # uv's own default-index settings
# Credentials and indexes an image build passes as a secret, never as a layer.
SECRET_PREFIXES = ("UV_INDEX_",)
SECRET_NAMES = ("UV_DEFAULT_INDEX", "UV_INDEX", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_INSECURE_HOST")

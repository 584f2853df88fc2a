"""What a job stores about its video or thumbnail: a small, content-addressed reference.

The key is ``{owner}/{sha256 hex}.{ext}``: the same bytes saved by the same owner always land on
the same key, so a second save writes nothing and a cache hit can point to the first job's object.
``owner`` is a scope such as ``t/<tenant>`` (a tenant's private results) or ``shared`` (results
any tenant may reuse). Keys are validated on the way in *and* when a stored reference is read
back, so a crafted key can never name another backend object (``../``, another prefix, a Redis key
of another kind).
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MediaType = Literal["video/mp4", "image/png"]

EXTENSIONS: dict[str, str] = {"video/mp4": "mp4", "image/png": "png"}

# One to four segments of tenant-name characters: `shared`, `t/acme`, `t/acme/thumbs`. No dots
# first (no `..`), no upper case (S3 and filesystems disagree about case), no `|` (the ledger's
# separator).
_SEGMENT = r"[a-z0-9][a-z0-9._-]{0,62}"
OWNER_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT}){{0,3}}$"
_OWNER = re.compile(OWNER_PATTERN)
_KEY = re.compile(rf"^(?P<owner>{_SEGMENT}(?:/{_SEGMENT}){{0,3}})/(?P<digest>[0-9a-f]{{64}})\.(?P<ext>mp4|png)$")


def check_owner(owner: str) -> str:
    """`owner` itself, or ValueError saying what an owner may look like."""
    if not _OWNER.match(owner):
        raise ValueError(
            f"artifact owner {owner!r} is not allowed: use 1-4 '/'-separated segments of a-z, 0-9, '.', '_', "
            "'-' (not starting with '.', '_' or '-'), such as 't/acme' or 'shared'"
        )
    return owner


def tenant_owner(tenant: str) -> str:
    """The owner scope of one tenant's private artifacts."""
    return check_owner(f"t/{tenant}")


SHARED_OWNER = "shared"


class ArtifactRef(BaseModel):
    """A stored artifact: where it is (`key`), what it is (`digest`, `size`, `media_type`).

    Frozen and JSON-serialisable (`model_dump_json` / `model_validate_json`): a job stores it as
    its only link to the bytes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(max_length=400)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    media_type: MediaType

    @model_validator(mode="after")
    def _key_matches_content(self) -> ArtifactRef:
        match = _KEY.match(self.key)
        if match is None:
            raise ValueError(f"artifact key {self.key!r} is not '{{owner}}/{{sha256 hex}}.{{mp4|png}}'")
        if match["digest"] != self.digest or match["ext"] != EXTENSIONS[self.media_type]:
            raise ValueError(f"artifact key {self.key!r} does not match its digest and media type")
        return self

    @property
    def owner(self) -> str:
        return self.key.rsplit("/", 1)[0]

    @classmethod
    def of(cls, owner: str, data: bytes, media_type: MediaType) -> ArtifactRef:
        """The reference `data` gets when `owner` saves it."""
        if not data:
            raise ValueError("an artifact cannot be empty")
        if media_type not in EXTENSIONS:
            raise ValueError(f"media type {media_type!r} is not one of {sorted(EXTENSIONS)}")
        digest = hashlib.sha256(data).hexdigest()
        key = f"{check_owner(owner)}/{digest}.{EXTENSIONS[media_type]}"
        return cls(key=key, digest=digest, size=len(data), media_type=media_type)


def check_key(key: str) -> str:
    """`key` itself when it is a well-formed artifact key, else ValueError (backends call this)."""
    if not _KEY.match(key):
        raise ValueError(f"artifact key {key!r} is not '{{owner}}/{{sha256 hex}}.{{mp4|png}}'")
    return key

"""The service's wire format (pydantic): what a PUT may carry and what GETs return.

Validation here is what keeps malformed records out of the database: unknown fields, a
non-finite or non-positive latency, a config that is not a JSON object all get 422.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A record's key: what `ir.hashing.kernel_key` produces (SHA-256, 64 lowercase hex digits).
# Kept as a literal here so the service never imports the IR (and torch with it).
KEY_PATTERN = r"^[0-9a-f]{64}$"

Key = Annotated[str, Field(pattern=KEY_PATTERN, description="kernel key: 64 lowercase hex digits")]
Target = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\x20-\x7e]+$")]
Latency = Annotated[
    float, Field(gt=0, lt=1e6, allow_inf_nan=False, description="seconds, lower is better")
]


class RecordIn(BaseModel):
    """The body of `PUT /v1/records/{key}`: one measured configuration of a kernel."""

    model_config = ConfigDict(extra="forbid", strict=False)

    target: Target
    config: dict[str, Any] = Field(description="the tunable knobs' values, e.g. tile sizes")
    latency_s: Latency
    meta: dict[str, Any] = Field(default_factory=dict, description="free-form: tuner, trials, host")

    @field_validator("config", "meta")
    @classmethod
    def _plain_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_plain_json(value)
        return value


MAX_DEPTH = 32


def check_plain_json(value: Any) -> None:
    """Finite numbers only (Python's json reads NaN, which no JSON reader can take back)
    and at most `MAX_DEPTH` levels of nesting. Iterative, so no input can exhaust the stack."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"non-finite number {item}: JSON has no NaN or Infinity")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


class Record(RecordIn):
    """A stored record: the best configuration known for `key`."""

    model_config = ConfigDict(extra="forbid")

    key: Key
    created_at: float = Field(description="Unix time of the first record for this key")
    updated_at: float = Field(description="Unix time of the last improvement")


class PutResult(BaseModel):
    improved: bool = Field(description="whether this write is now the best record for its key")
    record: Record = Field(description="the best record for the key after this write")


class RecordList(BaseModel):
    records: list[Record]


class Stats(BaseModel):
    records: int
    targets: dict[str, int]
    hits: int = Field(description="GETs of a key that had a record, since the server started")
    misses: int = Field(description="GETs of a key that had none, since the server started")
    writes: int = Field(description="accepted PUTs since the server started")
    improvements: int = Field(description="PUTs that became the best record of their key")
    uptime_s: float


class Health(BaseModel):
    status: str
    database: str
    version: str
    durability: dict[str, str] = Field(
        default_factory=dict,
        description="read from a live connection: SQLite journal_mode and synchronous, "
        "PostgreSQL synchronous_commit and fsync",
    )

"""The typed bodies of the service's responses (pydantic), so ``/docs`` (OpenAPI) documents every
field and FastAPI checks what the routes return."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["DuplicateGroup", "DuplicatesResponse", "ErrorBody", "ErrorDetail", "Health", "Hit", "IndexInfo",
           "Member", "SearchResponse"]


class Hit(BaseModel):
    """One neighbour: its stable id, the path it was indexed under, the cosine (or L2 distance)."""

    id: int
    path: str
    score: float


class SearchResponse(BaseModel):
    """Neighbours of a query, best first; ``query_id`` is set for a query by an indexed id."""

    query_id: int | None = None
    k: int
    results: list[Hit]


class Member(BaseModel):
    """A member of a near-duplicate group with its best cosine to another member."""

    id: int
    path: str
    score: float


class DuplicateGroup(BaseModel):
    members: list[Member]


class DuplicatesResponse(BaseModel):
    """Groups of two or more near-duplicates at cosine >= ``threshold``, largest first."""

    threshold: float
    grouping: str
    pairs: int
    groups: list[DuplicateGroup]


class IndexInfo(BaseModel):
    """What the index is: the model, weights and layer its vectors came from, and how it searches."""

    model: str
    weights: str | None
    layer: str
    pool: str | None
    dim: int
    count: int
    kind: str
    factory: str
    metric: str
    recall_at_10: float
    precision: str
    device: str
    max_k: int
    max_upload_bytes: int


class Health(BaseModel):
    status: str = "ok"
    count: int
    pending: int = Field(description="picture queries waiting for the model")


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str
    expected: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail

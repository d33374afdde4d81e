"""The request bodies the API accepts (the spec's schemas, as pydantic models the app's
handlers take), and how a request that fails their validation is described."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field


class CreateDatasetBody(BaseModel):
    name: str = Field(min_length=5, max_length=50)
    description: str = Field(max_length=200)


class UpdateDatasetBody(BaseModel):
    name: str | None = None
    description: str | None = None


class CreateRecordBody(BaseModel):
    payload: dict[str, Any]
    properties: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None  # sent by the SDK, not in the spec: accepted and ignored


class PayloadBody(BaseModel):
    payload: dict[str, Any]


class PropertiesBody(BaseModel):
    properties: dict[str, Any]


class RecordIdsBody(BaseModel):
    dataset_record_ids: list[UUID] = Field(min_length=1, max_length=500)


class FromDatasetBody(BaseModel):
    dataset_record_ids: list[UUID] = Field(min_length=1, max_length=10_000)


class FromCampaignBody(BaseModel):
    campaign_id: UUID


class FromExplorerBody(BaseModel):
    completion_event_ids: list[str] = Field(max_length=500)


class FromFileBody(BaseModel):
    file_id: str


class FromPlaygroundBody(BaseModel):
    conversation_ids: list[str]


class ClassificationOption(BaseModel):
    value: str
    description: str


class ClassificationOutput(BaseModel):
    type: Literal["CLASSIFICATION"] = "CLASSIFICATION"
    options: list[ClassificationOption]


class RegressionOutput(BaseModel):
    type: Literal["REGRESSION"] = "REGRESSION"
    min: float = Field(default=0, ge=0)
    min_description: str
    max: float = Field(default=1, lt=1_000_000_000)
    max_description: str


class JudgeDefinition(BaseModel):
    name: str = Field(min_length=5, max_length=50)
    description: str = Field(max_length=500)
    model_name: str = Field(max_length=500)
    output: Annotated[ClassificationOutput | RegressionOutput, Field(discriminator="type")]
    instructions: str = Field(max_length=10_000)
    tools: list[str]


class JudgeBody(BaseModel):
    judge_definition: JudgeDefinition


def describe_validation(errors: Any) -> str:
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(errors) - len(parts)
    return "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")

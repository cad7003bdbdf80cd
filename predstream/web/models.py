"""The API's response models (pydantic), shared by the JSON API and the pages.

Every list is paginated the same way: ``limit`` items at most and ``next_cursor``, an opaque
string to pass back as ``cursor`` for the next page (``null`` on the last page). Cursors are
keyset positions, so a page stays correct while rows are being added.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "AccuracyPoint",
    "RunSummary",
    "RunsPage",
    "RunAccuracy",
    "Answer",
    "Disagreement",
    "DisagreementsPage",
    "ChatMessage",
    "PromptInfo",
    "TimelinePoint",
    "RunTimeline",
    "PromptHistory",
    "SearchPage",
    "PredictionSetSummary",
    "PredictionSetsPage",
    "PredictionSetItem",
    "PredictionSetDetail",
]


class AccuracyPoint(BaseModel):
    """Exact-match accuracy of one run at one step (``prediction_accuracy_by_step``)."""

    step: int
    epoch: float | None = Field(description="The largest (fractional) epoch of the step's predictions.")
    predictions: int = Field(description="Predictions at this step (first returned sequence of each).")
    correct: int = Field(description="Of which equal the reference answer after trimming whitespace.")
    accuracy: float | None = Field(description="correct / predictions that have a reference; null when none has.")


class RunSummary(BaseModel):
    """One training run (a ``job_id``)."""

    job_id: str
    model_name: str | None
    steps: int = Field(description="Steps at which predictions were recorded.")
    prompts: int = Field(description="Prompts evaluated per step (the most at any step).")
    first_step: int
    last_step: int
    first_evaluation: datetime = Field(description="When the first prediction was produced.")
    last_evaluation: datetime = Field(description="When the last prediction was produced.")
    final_accuracy: float | None = Field(description="Accuracy at the last step that has references.")
    curve: list[AccuracyPoint] = Field(description="Accuracy per step, in step order (the sparkline): at most 50 "
                                                   "points, evenly spaced, the last step always in; "
                                                   "/accuracy has every step.")


class RunsPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    models: list[str] = Field(description="Every model name recorded (for the model filter).")


class RunAccuracy(BaseModel):
    job_id: str
    model_name: str | None
    points: list[AccuracyPoint]


class Answer(BaseModel):
    """One run's answer to a prompt at a step."""

    prediction: str
    is_correct: bool | None


class ChatMessage(BaseModel):
    role: str
    content: str


class PromptInfo(BaseModel):
    """A prompt as first recorded: its identity, its text (or chat messages), its reference."""

    prompt_id: str
    source_index: int | None
    sample_source: str | None
    sample_source_id: str | None
    prompt: str | None
    messages: list[ChatMessage] | None
    ground_truth: str | None


class Disagreement(BaseModel):
    """A prompt the compared runs answered differently at the chosen step."""

    prompt: PromptInfo
    answers: dict[str, Answer] = Field(description="job_id -> that run's answer.")


class DisagreementsPage(BaseModel):
    jobs: list[str]
    step: int | None = Field(description="The step compared; null when the runs share no step.")
    steps: list[int] = Field(description="Steps every compared run recorded.")
    total: int = Field(description="Prompts the runs answered differently at this step.")
    compared: int = Field(description="Prompts every run answered at this step.")
    items: list[Disagreement]
    next_cursor: str | None


class TimelinePoint(BaseModel):
    step: int
    epoch: float | None
    prediction: str
    is_correct: bool | None
    changed: bool = Field(description="The answer differs from this run's answer at its previous step.")
    produced_at: datetime


class RunTimeline(BaseModel):
    job_id: str
    model_name: str | None
    points: list[TimelinePoint]


class PromptHistory(BaseModel):
    """One prompt's predictions, run by run, step by step."""

    prompt: PromptInfo
    runs: list[RunTimeline]
    next_cursor: str | None = Field(description="Runs are paginated (by job_id); null on the last page.")


class SearchPage(BaseModel):
    query: str
    by: str = Field(description="What the query was matched against: text, prompt_id or source_index.")
    items: list[PromptInfo]
    next_cursor: str | None


class PredictionSetSummary(BaseModel):
    set_id: str
    name: str
    description: str | None
    source: str | None
    seed: int | None
    item_count: int
    created_at: datetime


class PredictionSetsPage(BaseModel):
    items: list[PredictionSetSummary]
    next_cursor: str | None


class PredictionSetItem(BaseModel):
    item_index: int
    source_index: int | None
    prompt_id: str
    prompt: str | None
    messages: list[ChatMessage] | None
    ground_truth: str | None


class PredictionSetDetail(BaseModel):
    set: PredictionSetSummary
    items: list[PredictionSetItem]
    next_cursor: str | None


def chat_messages(value: Any) -> list[ChatMessage] | None:
    """``messages`` as stored (JSONB list of {role, content}) -> models; anything else -> None."""
    if not isinstance(value, list):
        return None
    return [ChatMessage(role=str(m.get("role", "")), content=str(m.get("content", "")))
            for m in value if isinstance(m, dict)]

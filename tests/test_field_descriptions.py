"""Every field of the public models a recipe author touches has a description (the
attribute docstring, through pydantic's `use_attribute_docstrings`), so IDEs, `help()` and
JSON schemas show what a field means."""

from __future__ import annotations

import pytest
from agentplay.trainers import TrainConfig

from agentplay import Advantage, GroupBy, Recipe, Role, RunConfig, RunSummary, SampleFilter
from agentplay.models import SamplingParams
from agentplay.traces import RewardRecord

MODELS = [Role, Recipe, GroupBy, Advantage, SampleFilter, RunConfig, RunSummary, SamplingParams, TrainConfig,
          RewardRecord]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_is_described(model):
    missing = [name for name, info in model.model_fields.items() if not (info.description or "").strip()]
    assert missing == [], f"{model.__name__}: fields without a description: {missing}"
    schema = model.model_json_schema(mode="serialization") if model not in (Role, Recipe, GroupBy) else None
    if schema is not None:  # the descriptions reach the JSON schema (what editors and --help read)
        assert all("description" in prop for prop in schema["properties"].values())

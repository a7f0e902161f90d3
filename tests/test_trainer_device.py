"""Device and precision come from TrainConfig (`auto`: CUDA + bf16 when present, else CPU fp32)."""

from __future__ import annotations

import pytest
import torch

from agentplay.trainers import TrainConfig
from agentplay.trainers._learner import resolve_device


def test_auto_is_what_this_machine_has():
    expected = ("cuda", torch.cuda.is_bf16_supported()) if torch.cuda.is_available() else ("cpu", False)
    assert resolve_device(TrainConfig()) == expected
    assert resolve_device(TrainConfig(device="cpu", dtype="float32")) == ("cpu", False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without CUDA")
def test_asking_for_what_the_machine_lacks_names_the_field():
    with pytest.raises(ValueError, match="device: 'cuda'.*no CUDA device"):
        resolve_device(TrainConfig(device="cuda"))
    with pytest.raises(ValueError, match="dtype: bfloat16 training needs a CUDA device"):
        resolve_device(TrainConfig(dtype="bfloat16"))


def test_the_learner_trains_where_the_config_says(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentplay.models import default_model_dir
    from agentplay.trainers import GRPOLearner

    folder = default_model_dir()
    learner = GRPOLearner(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                          AutoTokenizer.from_pretrained(folder),
                          TrainConfig(output_dir=tmp_path, device="cpu", dtype="float32", report_to=[]))
    args = learner.trainer.args
    assert (args.use_cpu, args.bf16, learner.device.type) == (True, False, "cpu")
    assert next(learner.model.parameters()).dtype == torch.float32

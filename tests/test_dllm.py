"""Diffusion LMs: lossless parallel decoding (ssd, auto) against stepwise decoding, on tiny dLLMs trained in
seconds; checkpoints in Dream's and LLaDA's layouts; AR initialisation against transformers; the training
batch's attention; bad input."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_dllm import make_tiny_dllm

from leapdecode.api import LLM
from leapdecode.dllm.batch import make_batch
from leapdecode.dllm.llm import DiffusionLLM
from leapdecode.dllm.tasks import make_tasks
from leapdecode.errors import InvalidRequest, ModelLoadError

TASKS = make_tasks(2, seed=5, sizes=("easy",))  # 18 prompts, none of the training ones by construction (seed)


@pytest.fixture(scope="module")
def trained(tiny_dllm):
    return tiny_dllm


def _decode_all(llm, methods, max_new=16, block=4, tasks=TASKS):
    return {m: [llm.generate(t.prompt, method=m, max_new_tokens=max_new, block_size=block) for t in tasks]
            for m in methods}


def test_parallel_methods_reproduce_stepwise_with_fewer_forwards(trained):
    out = _decode_all(trained, ("stepwise", "ssd", "auto"))
    for m in ("ssd", "auto"):
        assert [r.token_ids for r in out[m]] == [r.token_ids for r in out["stepwise"]], m
    forwards = {m: sum(r.stats.target_forwards for r in rs) for m, rs in out.items()}
    assert forwards["ssd"] < 0.85 * forwards["stepwise"], forwards
    ssd = out["ssd"]
    assert sum(r.stats.accepted for r in ssd) > 0 and sum(r.stats.drafted for r in ssd) > sum(r.stats.accepted for r in ssd)
    assert all(r.stats.target_forwards == len(r.token_ids) or r.finish_reason == "stop" for r in out["stepwise"])


def test_ssd_is_identical_at_every_draft_length_and_block_size(trained):
    tasks = TASKS[::3]
    ref = {b: _decode_all(trained, ("stepwise",), max_new=24, block=b, tasks=tasks)["stepwise"] for b in (2, 8)}
    for b in (2, 8):
        for k in (2, 3, 8):
            got = [trained.generate(t.prompt, method="ssd", max_new_tokens=24, block_size=b, draft_length=k)
                   for t in tasks]
            assert [r.token_ids for r in got] == [r.token_ids for r in ref[b]], (b, k)


def test_stepwise_fills_one_token_per_forward_and_stops_at_the_end_token(trained):
    r = trained.generate(TASKS[0].prompt, method="stepwise", max_new_tokens=32, block_size=4)
    assert r.stats.drafted == 0
    assert 2 not in r.token_ids  # the end token ends the answer and is not part of it
    if r.finish_reason == "length":
        assert len(r.token_ids) == 32 and r.stats.target_forwards == 32
    else:  # forwards: one per filled position of the last block at most, one per token before it
        assert r.stats.target_forwards <= len(r.token_ids) + 4


@pytest.mark.parametrize("shifted", [True, False])
def test_bidirectional_models_decode_losslessly_too(tmp_path, shifted):
    """LLaDA (not shifted) and Dream (shifted) attend both ways: every forward runs the whole sequence."""
    llm = DiffusionLLM(str(make_tiny_dllm(tmp_path / "bi", attention="bidirectional", shifted=shifted, steps=0)))
    ref = _decode_all(llm, ("stepwise",), max_new=8, tasks=TASKS[:4])["stepwise"]
    got = _decode_all(llm, ("ssd",), max_new=8, tasks=TASKS[:4])["ssd"]
    assert [r.token_ids for r in got] == [r.token_ids for r in ref]
    assert sum(r.stats.drafted for r in got) > 0


def test_a_llada_checkpoint_loads_with_the_same_command(tmp_path, trained):
    """LLaDA's parameter names and config keys, renamed on load: the same model decodes the same."""
    src = trained.checkpoint_dir
    dst = tmp_path / "llada"
    shutil.copytree(src, dst)
    names = {"model.embed_tokens.": "model.transformer.wte.", "model.norm.": "model.transformer.ln_f.",
             ".input_layernorm.": ".attn_norm.", ".post_attention_layernorm.": ".ff_norm.",
             ".self_attn.o_proj.": ".attn_out.", ".self_attn.": ".", ".mlp.gate_proj.": ".ff_proj.",
             ".mlp.up_proj.": ".up_proj.", ".mlp.down_proj.": ".ff_out.", "model.layers.": "model.transformer.blocks."}
    state = {}
    for k, v in load_file(str(src / "model.safetensors")).items():
        for a, b in names.items():
            k = k.replace(a, b)
        state[k] = v
    save_file(state, str(dst / "model.safetensors"))
    c = trained.config
    (dst / "config.json").write_text(json.dumps({
        "model_type": "llada", "d_model": c.hidden_size, "n_layers": c.num_layers, "n_heads": c.num_heads,
        "n_kv_heads": c.num_kv_heads, "mlp_hidden_size": c.intermediate_size, "vocab_size": c.vocab_size,
        "mask_token_id": c.mask_token_id, "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
        "weight_tying": True, "eos_token_id": 2}))
    llada = LLM(str(dst))  # the one entry point picks the diffusion path from the config
    assert llada.is_diffusion and llada.config.attention == "bidirectional" and not llada.config.shifted
    assert llada.network.lm_head is not None
    r = llada.generate(TASKS[0].prompt, method="ssd", max_new_tokens=8, block_size=4)
    assert r.token_ids == llada.generate(TASKS[0].prompt, method="stepwise", max_new_tokens=8, block_size=4).token_ids


def test_ar_initialisation_keeps_the_ar_model_exactly():
    """The dLLM made from SmolLM2 computes SmolLM2's logits on causal attention (its clean, committed text)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from leapdecode.dllm.checkpoint import from_autoregressive
    from leapdecode.models.loader import resolve_checkpoint

    d = resolve_checkpoint("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(d)
    net = from_autoregressive(d, tok, 8).eval()
    ids = torch.tensor([tok.encode("The capital of France is Paris, and the capital of Spain is")])
    T = ids.shape[1]
    with torch.no_grad():
        h, _ = net(ids, torch.arange(T), torch.ones(T, T, dtype=torch.bool).tril())
        ours = net.logits(h)[0, :, : net.config.vocab_size - 1]
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)(ids).logits[0]
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)
    assert net.config.mask_token_id == len(tok) - 1 and net.config.shifted


def test_training_batch_attention_is_block_causal():
    rng = random.Random(0)
    b = make_batch([([1, 2, 3], [10, 11, 12, 13, 14])], mask_id=99, eos_id=2, rng=rng, block_sizes=(4,))
    allowed = b.allowed[0, 0]
    P, A = 3, 8  # 5 answer tokens + end token, padded to two blocks of 4
    L = P + A
    assert b.tokens.shape[1] == L + A
    assert torch.equal(allowed[:L, :L], torch.ones(L, L, dtype=torch.bool).tril())  # clean copy: causal
    assert not allowed[:L, L:].any()  # the clean copy never sees the noised one
    second = L + 4  # the first noised row of the second block
    assert allowed[second, : P + 4].all() and not allowed[second, P + 4 : L].any()  # clean text before its block
    assert allowed[second, L + 4 : L + 8].all() and not allowed[second, L : L + 4].any()  # its own block only
    noised = b.tokens[0, L:]
    assert (noised[:4] == 99).any() and (noised[4:] == 99).any()  # every block has a mask
    for (n, row), target, dn in zip(b.rows.tolist(), b.targets.tolist(), b.denoising.tolist()):
        if dn:  # a denoising row predicts the masked token right after it, never a block's first
            j = row - L + 1
            assert noised[j] == 99 and j % 4 and target == b.tokens[0, P + j]


def test_bad_input_is_one_clear_error(trained, tmp_path, llm):
    with pytest.raises(InvalidRequest, match="does not divide"):
        trained.generate("hi", method="stepwise", max_new_tokens=10, block_size=4)
    with pytest.raises(InvalidRequest, match="not for a diffusion LM"):
        trained.generate("hi", method="suffix", max_new_tokens=8)
    with pytest.raises(InvalidRequest, match="do not apply"):
        trained.generate("hi", method="ssd", max_new_tokens=8, block_size=4, draft_model="x")
    with pytest.raises(InvalidRequest, match="for diffusion LMs"):
        llm.generate("hi", method="stepwise", max_new_tokens=8)
    with pytest.raises(InvalidRequest, match="context window"):
        trained.generate("hi", method="stepwise", max_new_tokens=2048, block_size=4)
    no_mask = tmp_path / "nomask"
    shutil.copytree(trained.checkpoint_dir, no_mask)
    cfg = json.loads((no_mask / "config.json").read_text())
    del cfg["mask_token_id"]
    (no_mask / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="no mask_token_id"):
        LLM(str(no_mask))
    with pytest.raises(ModelLoadError, match="int4"):
        DiffusionLLM(str(trained.checkpoint_dir), dtype="int4")
    f32 = DiffusionLLM(str(trained.checkpoint_dir), dtype="float32")
    with pytest.raises(InvalidRequest, match="row-invariant"):
        f32.generate("hi", method="ssd", max_new_tokens=8, block_size=4)
    assert f32.generate("hi", method="stepwise", max_new_tokens=8, block_size=4).stats.target_forwards >= 1


def test_generate_command_compares_with_stepwise(trained, capsys):
    from leapdecode.cli import main

    argv = ["generate", TASKS[1].prompt, "--model", str(trained.checkpoint_dir), "--method", "ssd",
            "--max-new-tokens", "16", "--block-size", "4", "--compare", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stepwise"]["identical"] is True and out["method"] == "ssd"
    assert out["stats"]["target_forwards"] <= out["stepwise"]["forwards"]
    assert main(["generate", "hi", "--model", str(trained.checkpoint_dir), "--method", "suffix"]) == 2
    assert "for autoregressive models" in capsys.readouterr().err
    assert main(["generate", "hi", "--method", "ssd"]) == 2  # the default model is autoregressive
    assert "for diffusion LMs" in capsys.readouterr().err


def test_bench_reports_accuracy_speedup_and_identity_beside_the_ar_model(trained, tmp_path):
    from leapdecode.bench.config import BenchConfig
    from leapdecode.bench.harness import run_bench

    cfg = BenchConfig(model=str(trained.checkpoint_dir), prompts="parallel-tasks",
                      methods=("stepwise", "ssd", "ar:none"), max_new_tokens=16, limit=9, out=tmp_path / "b",
                      threads=2, warmup=0, block_size=4, ar_model="smollm2-135m")
    res = run_bench(cfg)
    m = res["methods"]
    assert m["ssd"]["exact_match_vs_plain"] == 1.0 and m["stepwise"]["speedup_vs_stepwise"] == 1.0
    # stepwise fills one position per forward, the end tokens after an answer too: at most one answer token each
    assert m["ssd"]["mean_accepted"] > m["stepwise"]["mean_accepted"] and m["stepwise"]["mean_accepted"] <= 1.0
    assert m["ar:none"]["accuracy"] is not None and set(m["ssd"]["accuracy_by_level"]) == {"easy"}
    assert {r["correct"] for r in res["records"]} <= {True, False}
    assert len({r["category"] for r in res["records"]}) == 9  # the first nine prompts: one of each task
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## Accuracy" in report and (tmp_path / "b" / "accuracy_vs_speed.png").stat().st_size > 0
    with pytest.raises(Exception, match="diffusion LM: methods suffix"):
        run_bench(BenchConfig(model=str(trained.checkpoint_dir), methods=("stepwise", "suffix"), limit=1,
                              prompts="parallel-tasks", out=tmp_path / "c", warmup=0))


def test_parallel_tasks_are_checkable_and_seeded():
    from leapdecode.bench.prompts import correct, load_prompts
    from leapdecode.dllm.tasks import make_tasks

    assert make_tasks(3, seed=7) == make_tasks(3, seed=7) and make_tasks(3, seed=7) != make_tasks(3, seed=8)
    prompts = load_prompts("parallel-tasks")
    assert len(prompts) == 108 and len({p.id for p in prompts}) == 108
    shuffle = next(p for p in prompts if p.category == "shuffle")
    words = shuffle.answer.split()
    assert correct(shuffle, " ".join(reversed(words))) and not correct(shuffle, " ".join(words[:-1] + words[:1]))
    sort = next(p for p in prompts if p.category == "sort")
    assert correct(sort, sort.answer + ".") and not correct(sort, " ".join(reversed(sort.answer.split())) + " 0")


def test_export_gguf_writes_llamacpp_dream_layout(trained, tmp_path):
    """The tensors llama.cpp's dream architecture reads, under its names, with the weights as saved."""
    from gguf import GGUFReader

    from leapdecode.dllm.gguf_export import export_gguf

    out = export_gguf(trained.checkpoint_dir, tmp_path / "tiny.gguf")
    r = GGUFReader(out)

    def scalar(key):
        f = r.fields[key]
        return f.parts[f.data[0]].tolist()[0] if len(f.types) == 1 and f.types[0].name != "STRING" else \
            bytes(f.parts[f.data[0]]).decode()

    c = trained.config
    assert scalar("general.architecture") == "dream" and scalar("tokenizer.ggml.mask_token_id") == c.mask_token_id
    assert scalar("dream.block_count") == c.num_layers and scalar("diffusion.shift_logits") is True
    assert len(r.fields["tokenizer.ggml.tokens"].data) == c.vocab_size
    tensors = {t.name: t for t in r.tensors}
    assert len(tensors) == 2 + 9 * c.num_layers  # embeddings, final norm, nine per layer (tied head)
    state = load_file(str(trained.checkpoint_dir / "model.safetensors"))
    q = tensors["blk.1.attn_q.weight"]
    assert torch.equal(torch.from_numpy(q.data.copy()).reshape(state["model.layers.1.self_attn.q_proj.weight"].shape),
                       state["model.layers.1.self_attn.q_proj.weight"])


@pytest.mark.trained
def test_the_trained_dllm_decodes_identically_with_every_method():
    """On the model train-dllm makes: parallel-tasks and chat prompts, ssd and auto against stepwise."""
    from conftest import PROMPTS

    llm = LLM("smollm2-135m-dllm")
    prompts = [t.prompt for t in make_tasks(1, seed=99)] + PROMPTS[:4]
    for p in prompts:
        ref = llm.generate(p, method="stepwise", max_new_tokens=64, block_size=8)
        for m in ("ssd", "auto"):
            assert llm.generate(p, method=m, max_new_tokens=64, block_size=8).token_ids == ref.token_ids, (m, p)

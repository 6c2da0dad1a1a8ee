"""Token trees: geometry, compaction, and lossless verification of trees drafted by ngram, suffix and a draft model.

The trees here are the drafters' own on the conftest prompts, verified by the real model: greedy output
equals transformers' greedy generate(), reduced precision equals our own plain decoding bit for bit,
seeded sampling equals plain seeded sampling, and a batch mixing a tree with chains equals each alone.
The draft-model tree tests also check the draft's own cache: compacted to the committed path, and never
past the request's capacity. The greedy tests also check the trees branched and that a non-first branch was accepted, so it proves
something about trees and not only about chains.
"""

from __future__ import annotations

import argparse
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from leapdecode.api import Run
from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
from leapdecode.bench import BenchConfig, add_bench_arguments, bench_config_from_args
from leapdecode.bench.contenders import build_contenders
from leapdecode.bench.divergence import first_difference, top2_gap
from leapdecode.bench.harness import drafter_options
from leapdecode.decode.sampling import target_probs
from leapdecode.decode.tree import MAX_NODES, TokenTree, from_branches
from leapdecode.decode.verify import accept_greedy, verify_sampling
from leapdecode.drafters import DrafterResources, can_tree, make_drafter
from leapdecode.drafters.draft_model import DraftModelConfig, DraftModelDrafter
from leapdecode.errors import InvalidRequest, LeapError
from leapdecode.models.base import Segment
from leapdecode.models.hf_adapter import HFAdapter
from leapdecode.types import Draft, SamplingParams, SeqView, Verdict
from tests.conftest import NEW_TOKENS, PROMPTS, hf_next_logits
from tests.test_draft_model import truncated  # noqa: F401 (a fixture: the model cut to its first layers)
from tests.test_sampling import TV_TOL, _tv

NEAR_TIE = 1e-4
# Three branches: node 0 -> 1 -> 2 (the best), node 3 a sibling of 0, node 4 a sibling of 1, node 5 under 3.
PARENTS = torch.tensor([-1, 0, 1, -1, 0, 3])
TOKENS = torch.tensor([10, 11, 12, 20, 21, 22])


# --- geometry, drafts and verdicts -----------------------------------------------------------------------


def test_depths_positions_and_visibility():
    tree = TokenTree.of(PARENTS)
    assert tree.depth.tolist() == [0, 1, 2, 3, 1, 2, 2]  # row 0 is the pending token
    assert tree.max_depth == 3 and tree.rows == 7
    assert tree.positions(10).tolist() == [10, 11, 12, 13, 11, 12, 12]
    ancestors = {0: [0], 1: [0, 1], 2: [0, 1, 2], 3: [0, 1, 2, 3], 4: [0, 4], 5: [0, 1, 5], 6: [0, 4, 6]}
    vis = tree.visibility()
    for row, seen in ancestors.items():
        assert vis[row].nonzero().flatten().tolist() == seen
    mask = tree.mask(5)
    assert mask.shape == (7, 12) and mask[:, :5].all() and torch.equal(mask[:, 5:], vis)
    assert tree.children(TOKENS.tolist()) == [{10: 0, 20: 3}, {11: 1, 21: 4}, {12: 2}, {}, {22: 5}, {}, {}]


@pytest.mark.parametrize("parents", [[0, -1], [-1, 1], [-1, -2]])
def test_parents_must_come_first(parents):
    with pytest.raises(ValueError, match="parent"):
        TokenTree.of(torch.tensor(parents))


def test_draft_tree_prefix_and_refusals():
    draft = Draft(tokens=TOKENS, parents=PARENTS)
    assert draft.is_tree and not Draft(tokens=TOKENS).is_tree
    cut = draft.prefix(4)
    assert cut.tokens.tolist() == [10, 11, 12, 20] and cut.parents.tolist() == [-1, 0, 1, -1]
    TokenTree.of(cut.parents)  # a prefix is still a valid tree
    with pytest.raises(ValueError, match="one parent per node"):
        Draft(tokens=TOKENS, parents=PARENTS[:3])
    with pytest.raises(ValueError, match="deterministic"):
        Draft(tokens=TOKENS, parents=PARENTS, probs=torch.full((6, 30), 1 / 30))
    assert Verdict(accepted=2, tokens=[1, 2, 3]).path == (0, 1)  # a chain's path by default
    with pytest.raises(ValueError):
        Verdict(accepted=2, tokens=[1, 2, 3], path=(4,))


def _paths(draft: Draft) -> list[list[int]]:
    """Every root-to-leaf path of a draft, as tokens."""
    parents, tokens = draft.parents.tolist(), draft.tokens.tolist()
    leaves = [n for n in range(len(tokens)) if n not in parents]
    paths = []
    for n in leaves:
        path = []
        while n >= 0:
            path.insert(0, tokens[n])
            n = parents[n]
        paths.append(path)
    return sorted(paths)


def test_from_branches_merges_prefixes_best_first():
    branches = [[1, 2, 3, 4], [1, 5, 6], [7, 8]]
    assert not from_branches([[1, 2, 3], [1, 2, 3]], 8).is_tree  # one distinct branch: a chain
    draft = from_branches(branches, 8)
    assert len(draft) == 8 and _paths(draft) == sorted(branches)  # 1 is one node shared by two branches
    assert draft.tokens[:2].tolist() == [1, 2]  # the best branch's first tokens come first
    TokenTree.of(draft.parents)
    small = from_branches(branches, 5)  # the budget keeps the best-scored nodes, still a tree
    assert len(small) == 5 and small.tokens[:2].tolist() == [1, 2]
    assert all(any(b[: len(p)] == p for b in branches) for p in _paths(small))
    assert torch.equal(small.tokens, draft.tokens[:5])  # a smaller budget is a prefix of the bigger tree
    wide = from_branches([[b] + list(range(100, 140)) for b in range(20)], 500)
    assert len(wide) == MAX_NODES  # capped, not refused


def test_verify_tree_greedy_follows_the_targets_argmax():
    draft = Draft(tokens=TOKENS, parents=PARENTS)

    def target(*argmax: tuple[int, int]) -> list[int]:  # the argmax at rows 0..6: the given (row, token), else 0
        predicted = [0] * 7
        for row, token in argmax:
            predicted[row] = token
        return predicted

    # 10 (node 0), then 21 (node 4, the sibling of node 1), then a bonus token at node 4's row
    assert accept_greedy(draft, target((0, 10), (1, 21), (5, 7))) == Verdict(2, [10, 21, 7], (0, 4))
    # the second root branch all the way: 20 (node 3), 22 (node 5), bonus
    assert accept_greedy(draft, target((0, 20), (4, 22), (6, 9))) == Verdict(2, [20, 22, 9], (3, 5))
    assert accept_greedy(draft, target((0, 3))) == Verdict(0, [3], ())  # no branch starts with the target's token


# --- the KV cache compacted to the accepted path ---------------------------------------------------------


@pytest.fixture(scope="module")
def llm_bf16():
    from leapdecode.api import LLM

    return LLM("smollm2-135m", dtype="bfloat16", threads=2)


@pytest.mark.parametrize("which", ["float32", "bfloat16"])
def test_compacted_cache_equals_a_chain_along_the_path(llm, llm_bf16, which):
    net = (llm if which == "float32" else llm_bf16).network
    ids = llm.encode("Name three rivers.")
    start, path = len(ids) - 1, (3, 5)  # accept node 3 (a root child) then its child, node 5

    def prefilled():
        cache = net.new_cache(len(ids) + 16)
        net.forward(torch.tensor([ids[:-1]]), 0, cache, logits=False)
        cache.rollback(start)
        return cache

    tree_cache, chain_cache = prefilled(), prefilled()
    tree = TokenTree.of(PARENTS)
    fed = torch.cat([torch.tensor(ids[-1:]), TOKENS])
    tree_logits = net.forward_packed([Segment(fed, start, tree_cache, tree.mask(start), tree.positions(start))])
    tree_cache.keep_path(start, path)
    chain = torch.tensor([ids[-1], 20, 22])
    chain_logits = net.forward(chain[None], start, chain_cache)[0]
    end = start + 3
    chain_cache.rollback(end)  # a forward writes slots; the length is the caller's to move
    assert tree_cache.length == end
    after = [net.forward(torch.tensor([[5]]), end, c)[0, 0] for c in (tree_cache, chain_cache)]
    if which == "bfloat16":  # the fused kernel computes a masked row exactly as its chain's: same bits
        assert torch.equal(tree_cache.k[:, :, :, :end], chain_cache.k[:, :, :, :end])
        assert torch.equal(tree_logits[[0, 4, 6]], chain_logits) and torch.equal(after[0], after[1])
    else:  # float32 SDPA reduces over other key lengths: equal to rounding
        torch.testing.assert_close(tree_logits[[0, 4, 6]], chain_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(after[0], after[1], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(tree_logits[1], chain_logits[1], atol=1e-2)  # other branches do differ


# --- lossless decoding with the drafters' trees ----------------------------------------------------------


def _path(draft: Draft, tokens: list[int]) -> list[int]:
    """The nodes a verify accepted, from the tokens it yielded."""
    children, row, path = TokenTree.of(draft.parents).children(draft.tokens.tolist()), 0, []
    for t in tokens[:-1]:
        path.append(children[row][t])
        row = path[-1] + 1
    return path


def _first_branch(draft: Draft) -> set[int]:
    """The nodes reached by always taking the first child: the best branch."""
    kids = TokenTree.of(draft.parents).children(draft.tokens.tolist())
    row, nodes = 0, set()
    while kids[row]:
        node = min(kids[row].values())
        nodes.add(node)
        row = node + 1
    return nodes


def _decode_counting(llm, ids, max_new_tokens, **options) -> tuple[list[int], Counter, Run]:
    """Decode step by step as the scheduler does (segment, one packed forward, settle), counting trees."""
    run = llm.stream(prompt_ids=ids, max_new_tokens=max_new_tokens, **options)
    run.start()
    seen: Counter = Counter()
    while not run.done:
        engine = run.engine
        draft = engine.propose(run.budget())
        tokens = engine.settle(draft, llm.network.forward_packed([engine.segment(draft)]))
        if draft.is_tree:
            seen["trees"] += 1
            seen["siblings"] += len(set(draft.parents.tolist())) < len(draft)
            seen["off_first_branch"] += any(n not in _first_branch(draft) for n in _path(draft, tokens))
        seen["accepted"] += len(tokens) - 1
        seen["full_size"] += len(draft) == MAX_NODES
        run.push(tokens)
    return run.result().token_ids, seen, run


def _assert_greedy(hf_model, ids, ref, out, where):
    split = first_difference(out, ref)
    if split is not None:  # tolerated only where the target itself is at a numerical tie, as in test_lossless
        gap = top2_gap(hf_next_logits(hf_model, ids + ref[:split]))
        assert gap < NEAR_TIE, f"{where} diverges at token {split}, gap {gap}"


def test_ngram_tree_greedy_equals_transformers_and_branches(llm, hf_model, prompt_ids, hf_greedy):
    total: Counter = Counter()
    for i, (ids, ref) in enumerate(zip(prompt_ids, hf_greedy)):
        out, seen, _ = _decode_counting(llm, ids, NEW_TOKENS, method="ngram", tree=4)
        _assert_greedy(hf_model, ids, ref, out, f"ngram tree, prompt {i} ({PROMPTS[i][:30]!r})")
        total += seen
    assert total["trees"] > 0 and total["siblings"] == total["trees"]
    assert total["off_first_branch"] > 0  # an alternative branch was right at least once
    assert total["accepted"] > 0


def test_suffix_tree_greedy_equals_transformers_and_branches(llm, hf_model, prompt_ids, hf_greedy):
    out, seen, _ = _decode_counting(llm, prompt_ids[0], NEW_TOKENS, method="suffix", tree=3)
    _assert_greedy(hf_model, prompt_ids[0], hf_greedy[0], out, "suffix tree, prompt 0")
    assert seen["trees"] > 0 and seen["off_first_branch"] > 0  # its suffix-link alternatives were right too
    out = llm.generate(prompt_ids=prompt_ids[9], method="suffix", tree=3, max_new_tokens=64)  # through Engine.step
    _assert_greedy(hf_model, prompt_ids[9], hf_greedy[9][:64], out.token_ids, "suffix tree, prompt 9")
    assert out.stats.accepted > 0


def test_bfloat16_tree_equals_own_plain_decoding(llm_bf16):
    trees = 0
    for prompt in PROMPTS[0], PROMPTS[9]:
        ids = llm_bf16.encode(prompt)
        plain = llm_bf16.generate(prompt_ids=ids, method="none", max_new_tokens=48).token_ids
        out, seen, _ = _decode_counting(llm_bf16, ids, 48, method="ngram", tree=4)
        assert out == plain, f"ngram tree at bfloat16 differs from plain decoding on {prompt[:30]!r}"
        suffix = llm_bf16.generate(prompt_ids=ids, method="suffix", tree=3, max_new_tokens=48).token_ids
        assert suffix == plain, f"suffix tree at bfloat16 differs from plain decoding on {prompt[:30]!r}"
        trees += seen["trees"]
    assert trees > 0


def _assert_cache_is_a_chain(drafter: DraftModelDrafter) -> None:
    """The draft's cache after its compactions == one chain forward of the tokens it says it holds."""
    n = len(drafter.fed)
    fresh = drafter.net.new_cache(n + 1)
    drafter.net.forward(torch.tensor([drafter.fed]), 0, fresh, logits=False)
    assert drafter.cache.length == n
    torch.testing.assert_close(drafter.cache.k[:, :, :, :n], fresh.k[:, :, :, :n], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(drafter.cache.v[:, :, :, :n], fresh.v[:, :, :, :n], rtol=1e-4, atol=1e-4)


def test_draft_model_tree_greedy_equals_transformers_and_branches(llm, hf_model, prompt_ids, hf_greedy, truncated):
    """A truncated copy of the model drafts (threshold 0: it grows every branch worth growing); accepted
    paths run through slots fed at different levels, so its cache is compacted along the way."""
    assert can_tree("draft")
    seen: Counter = Counter()
    for i in (0, 4):
        out, steps, run = _decode_counting(llm, prompt_ids[i], 40, method="draft", draft_model=truncated, tree=3,
                                           draft_threshold=0.0)
        _assert_greedy(hf_model, prompt_ids[i], hf_greedy[i][:40], out, f"draft tree, prompt {i}")
        _assert_cache_is_a_chain(run.engine.drafter)
        seen += steps
    assert seen["trees"] > 0 and seen["siblings"] == seen["trees"]
    assert seen["accepted"] > 0


def test_draft_model_tree_sampling_equals_plain_sampling(llm, prompt_ids, truncated):
    ids = prompt_ids[1]
    plain = llm.generate(prompt_ids=ids, method="none", temperature=0.8, seed=4, max_new_tokens=32)
    tree = llm.generate(prompt_ids=ids, method="draft", draft_model=truncated, tree=3, temperature=0.8, seed=4,
                        max_new_tokens=32)
    assert tree.token_ids == plain.token_ids and tree.stats.accepted > 0


def test_draft_model_tree_stays_within_capacity(llm, truncated):
    """Every node the tree feeds takes a draft cache slot: with 3 slots left the tree stops growing there,
    where a roomier cache grows it further; in a request no tree ever passes the request's capacity."""
    draft, ids = llm.drafts.load(truncated), llm.encode("Count from one to twenty.")

    def grown(capacity: int) -> tuple[DraftModelDrafter, Draft]:
        cfg = DraftModelConfig(0.0, capacity, llm.network.vocab_size, tree=4)
        drafter = DraftModelDrafter(draft, cfg, SamplingParams(), torch.Generator())
        return drafter, drafter.propose(SeqView(list(ids), len(ids)), 12)

    (tight, _), (roomy, roomy_draft) = grown(len(ids) + 3), grown(len(ids) + 64)
    assert roomy_draft.is_tree and len(roomy_draft) == 12  # room for alternatives to make the budget
    assert tight.tree.n + tight.tree.fed <= tight.limit == len(ids) + 3 and tight.cache.length <= tight.limit
    assert roomy.tree.fed > tight.tree.fed  # the limit, not the budget, stopped the tight tree
    run = llm.stream("List ten fruits, one per line.", method="draft", draft_model=truncated, tree=3,
                     draft_threshold=0.0, max_new_tokens=40)
    run.start()
    drafter, used = run.engine.drafter, []
    while not run.done:
        run.push(run.engine.step(run.budget()))
        if drafter.tree is not None:
            used.append(drafter.tree.n + drafter.tree.fed)
    capacity = len(run.prompt_ids) + 40 + 12 + 1  # prompt + max_new_tokens + max_draft_length + 1, as api.py
    assert used and max(used) <= drafter.limit == capacity


# --- sampling -------------------------------------------------------------------------------------------


def test_seeded_tree_sampling_equals_plain_sampling(llm):
    ids = llm.encode("Count from 1 to 40, separated by commas.")
    plain = llm.generate(prompt_ids=ids, method="none", temperature=0.7, seed=5, max_new_tokens=48)
    for method in ("ngram", "suffix"):
        tree = llm.generate(prompt_ids=ids, method=method, tree=3, temperature=0.7, seed=5, max_new_tokens=48)
        assert tree.token_ids == plain.token_ids, method
        assert tree.stats.target_forwards < len(tree.token_ids)  # drafts were accepted along the way


def test_tree_sampling_follows_the_target_at_the_first_positions(llm):
    """Three candidates for the first position (the target's likeliest, its third, and one it rarely
    picks), each with one child: the first token must follow p at row 0 and, after the likeliest was
    accepted, the second must follow p at that node's row."""
    ids = llm.encode("Name a colour and an animal.")
    net, start = llm.network, len(ids) - 1
    cache = net.new_cache(len(ids) + 8)
    net.forward(torch.tensor([ids[:-1]]), 0, cache, logits=False)
    probe = net.forward(torch.tensor([ids[-1:]]), start, cache)[0, 0]
    order = probe.argsort(descending=True)
    firsts = [order[0], order[2], order[40]]
    tokens = torch.stack(firsts + [order[1]] * 3)  # [6]: three root children, then one child under each
    draft = Draft(tokens=tokens, parents=torch.tensor([-1, -1, -1, 0, 1, 2]))
    fed = torch.cat([torch.tensor(ids[-1:]), tokens])
    tree = TokenTree.of(draft.parents)
    logits = net.forward_packed([Segment(fed, start, cache, tree.mask(start), tree.positions(start))])
    keep = torch.topk(logits.max(dim=0).values, 512).indices  # the drafted tokens are among these
    local = torch.stack([(keep == t).nonzero()[0, 0] for t in tokens])
    draft = Draft(tokens=local, parents=draft.parents)
    p = target_probs(logits[:, keep], SamplingParams(temperature=1.0))  # [7, 512]
    gen = torch.Generator().manual_seed(99)
    first, second = torch.zeros(512), torch.zeros(512)
    for _ in range(8000):
        v = verify_sampling(draft, p, [gen] * 3)
        first[v.tokens[0]] += 1
        if v.path[:1] == (0,):
            second[v.tokens[1]] += 1
    assert _tv(first, p[0]) < TV_TOL + 0.01
    assert second.sum() > 1000 and _tv(second, p[1]) < TV_TOL + 0.02


# --- the scheduler: a tree batched with chains -----------------------------------------------------------


def test_scheduler_batches_a_tree_with_chains(llm, prompt_ids):
    jobs = [(0, dict(method="ngram", tree=4)), (9, dict(method="suffix")), (7, dict(method="none")),
            (9, dict(method="suffix", tree=3, temperature=0.8, seed=3))]
    scheduler = Scheduler(llm.network, SchedulerConfig(max_batch=len(jobs)))
    results: dict[int, list[int]] = {}
    for n, (i, options) in enumerate(jobs):
        run = llm.stream(prompt_ids=prompt_ids[i], max_new_tokens=40, **options)

        def done(ev, n=n):
            if ev.finish_reason is not None:
                results[n] = ev.result.token_ids if ev.result else [ev.error]

        scheduler.submit(run, done)
    scheduler.run(keep_going=lambda: len(results) < len(jobs))
    for n, (i, options) in enumerate(jobs):
        alone = llm.generate(prompt_ids=prompt_ids[i], max_new_tokens=40, **options).token_ids
        assert results[n] == alone, f"job {n} ({options}) differs in the batch"


# --- errors and limits -----------------------------------------------------------------------------------


def test_tree_errors(llm, hf_model):
    for method in ("none", "layerskip", "jacobi"):  # layerskip drafts by skipping the target's layers: a chain
        with pytest.raises(InvalidRequest, match=f"method {method} cannot propose token trees"):
            make_drafter(method, tree=2)
    make_drafter("none", tree=0)  # a chain is what every method does
    with pytest.raises(InvalidRequest, match="tree must be"):
        make_drafter("suffix", tree=-1)
    with pytest.raises(InvalidRequest, match="cannot propose token trees"):
        llm.generate(prompt_ids=llm.encode("Hi"), method="none", tree=3, max_new_tokens=4)
    adapter = HFAdapter(hf_model)
    with pytest.raises(InvalidRequest, match="transformers"):
        make_drafter("suffix", DrafterResources(network=adapter), tree=2)
    with pytest.raises(InvalidRequest, match="transformers"):
        adapter.forward(torch.tensor([[1, 2]]), 0, adapter.new_cache(8), mask=torch.ones(2, 2, dtype=torch.bool))


def test_a_tree_past_the_row_limit_is_capped(llm):
    ids = llm.encode("Count from 1 to 60, separated by commas.")
    plain = llm.generate(prompt_ids=ids, method="none", max_new_tokens=80).token_ids
    out, seen, _ = _decode_counting(llm, ids, 80, method="ngram", tree=100, draft_length=200, max_draft_length=200)
    assert out == plain and seen["full_size"] > 0  # trees were cut to the row limit, and stayed exact


def test_bench_runs_tree_variants_beside_their_chains():
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    cfg = bench_config_from_args(parser.parse_args(["--methods", "hf,none,ngram,suffix", "--tree", "4"]))
    assert cfg.methods == ("hf", "none", "ngram", "ngram:tree", "suffix", "suffix:tree")
    options = drafter_options(cfg)
    assert options["ngram:tree"] == {"tree": 4} and options["suffix:tree"] == {"tree": 4}
    cfg = BenchConfig(methods=("none", "draft", "draft:tree"), draft_model="d")
    assert drafter_options(cfg)["draft:tree"] == {"draft_model": "d", "draft_dtype": "auto", "tree": 3}
    with pytest.raises(LeapError, match="draft-model"):
        BenchConfig(methods=("draft:tree",))
    for bad in ({"methods": ("layerskip:tree",)}, {"methods": ("suffix:tree",), "tree": 1}):
        with pytest.raises(LeapError):
            BenchConfig(**bad)
    calls = []

    class Engine:  # records what each contender asks of the engine
        def generate(self, prompt_ids, **options):
            calls.append(options)
            stats = SimpleNamespace(mean_accepted=1.0, as_dict=dict)
            return SimpleNamespace(token_ids=[1], stats=stats, finish_reason="length")

    for generate in build_contenders(Engine(), None, ("suffix", "suffix:tree"), 4, drafter_options={
            "suffix:tree": {"tree": 4}}).values():
        generate([5])
    assert [(c["method"], c.get("tree")) for c in calls] == [("suffix", None), ("suffix", 4)]

"""End-to-end baselines: each core step on hand-made inputs or a tiny random model (no downloads)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace as Row

import numpy as np
import pytest
import torch

from core.defenses.baselines import bki, cube, kind
from core.defenses.baselines.common import (
    detector_metrics,
    penultimate_features,
    predict_proba,
    score_with_flags,
)
from core.defenses.baselines.onion import CausalLMPerplexity, Onion, correct_text, suspicion_scores
from core.defenses.baselines.rap import Rap, insert_front, trigger_token_id
from core.defenses.baselines.strip import Strip, entropy_bits, perturb, tfidf_ranking
from tests.tiny_models import in_memory_bert

WORDS = ("the a film movie good bad great awful cf mn bb tq mb i watch this 3d is was not very story "
         "acting plot fun boring").split()


@pytest.fixture(scope="module")
def tiny_bert() -> tuple[object, object]:
    model, tok = in_memory_bert(WORDS, id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1})
    return model.eval(), tok


@pytest.fixture(scope="module")
def tiny_gpt2() -> tuple[object, object]:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", *WORDS])}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(vocab), n_positions=64,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval(), tok


def test_registry() -> None:
    assert [kind(n) for n in ("onion", "strip", "rap", "bki", "cube")] == [
        "corrector", "detector", "detector", "filter", "filter"]
    with pytest.raises(KeyError):
        kind("nope")


# --- accounting (docs/reference-implementation.md §5) ---------------------------------------------------

def test_flip_and_reject_accounting_by_hand() -> None:
    preds = [1, 1, 0, 0]
    labels = [1, 1, 1, 0]
    flags = [False, True, True, False]
    # reject: flagged rows always wrong -> only rows 0 (correct) and 3 (correct) count: 2/4
    assert score_with_flags(preds, labels, flags, 2, "reject") == 0.5
    # flip: row1 flagged, pred 1 == y -> wrong; row2 flagged, pred 0 != y -> right; rows 0, 3 right: 3/4
    assert score_with_flags(preds, labels, flags, 2, "flip") == 0.75
    with pytest.raises(ValueError):
        score_with_flags([0], [0], [True], 3, "flip")  # upstream asserts binary


def test_detector_metrics_asr_counts_target_predictions() -> None:
    m = detector_metrics(clean_preds=[0, 1], clean_labels=[0, 1], clean_flags=[False, False],
                         poison_preds=[1, 1, 1, 0], poison_flags=[True, False, False, False], target=1,
                         num_classes=2)
    assert m["asr_undefended"] == 0.75
    assert m["asr_reject"] == 0.5  # the flagged hit no longer counts
    assert m["asr_flip"] == 0.5  # flagged & pred=target -> label flipped to 0 -> not a hit
    assert m["cacc_flip"] == 1.0 and m["clean_flagged"] == 0.0 and m["poison_flagged"] == 0.25


# --- ONION ----------------------------------------------------------------------------------------

def stub_ppl(texts: list[str]) -> np.ndarray:
    return np.array([10.0 + 50.0 * t.split().count("cf") for t in texts])


def test_onion_suspicion_and_deletion() -> None:
    words = ["good", "cf", "film"]
    assert suspicion_scores(words, stub_ppl) == [0.0, 50.0, 0.0]
    assert correct_text("good cf film", stub_ppl, threshold=1.0) == "good film"
    # Upstream's bar is inclusive (f >= 0): a word whose removal leaves PPL unchanged goes too.
    assert correct_text("good cf film", stub_ppl, threshold=0.0) == ""
    assert correct_text("single", stub_ppl) == "single"  # one word: unchanged
    assert Onion(stub_ppl, threshold=1.0).correct(["cf a cf", "fine"]) == ["a", "fine"]


def test_onion_perplexity_masks_padding(tiny_gpt2: tuple) -> None:
    model, tok = tiny_gpt2
    short, long = "good film", "this movie is not very good but the plot was fun"
    fixed = CausalLMPerplexity(model, tok, mask_padding=True)
    alone, batched = fixed([short])[0], fixed([short, long])[0]
    assert alone == pytest.approx(batched, rel=1e-5)  # batch-mates no longer change a text's PPL
    # By hand: exp(mean CE of predicting "film" after "good").
    ids = tok(short)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    ce = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    assert alone == pytest.approx(math.exp(ce.item()), rel=1e-5)
    upstream = CausalLMPerplexity(model, tok, mask_padding=False)
    assert upstream([short])[0] == pytest.approx(alone, rel=1e-5)  # no padding: same
    assert upstream([short, long])[0] != pytest.approx(alone, rel=1e-3)  # padding counted upstream
    corrected = Onion(fixed, threshold=0.0).correct([long, "good"])
    assert len(corrected) == 2 and corrected[1] == "good"
    assert set(corrected[0].split()) <= set(long.split())


# --- STRIP ----------------------------------------------------------------------------------------

def stub_probs(texts: list[str]) -> np.ndarray:
    return np.array([[0.001, 0.999] if "cf" in t.split() else [0.5, 0.5] for t in texts])


DEV = ["the acting was great fun", "a boring plot and bad acting", "i watch this film for the story",
       "not a very good movie", "great story great fun", "awful boring film", "the plot is fun",
       "bad movie bad acting bad plot"]


def test_strip_ranking_perturbation_and_entropy() -> None:
    vocab, ranking = tfidf_ranking(DEV)
    assert "the" not in set(vocab)  # English stop words removed
    top_of_last = vocab[ranking[7][0]]
    assert top_of_last == "bad"  # tf 3 in the last document
    rng = np.random.default_rng(0)
    text = "one two three four five six seven eight"
    out = perturb(text, vocab, ranking, 0.25, rng).split()
    assert len(out) == 8 and sum(a != b for a, b in zip(out, text.split(), strict=True)) <= 2
    assert entropy_bits(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist() == pytest.approx([1.0, 0.0])


def test_strip_detects_confident_inputs() -> None:
    strip = Strip(stub_probs, repeat=5, swap_ratio=0.25, frr=0.01, seed=1).fit(DEV)
    assert strip.threshold == pytest.approx(1.0)
    flags = strip.detect(["cf good film cf", "a good film", "cf cf cf cf"])
    assert flags.tolist() == [True, False, True]


def test_strip_averages_each_texts_own_copies() -> None:
    texts = ["cf cf cf cf", "a b c d", "e f g h", "i j k l", "m n o p"]  # N = repeat = 5
    fixed = Strip(stub_probs, repeat=5, seed=3).fit(DEV).entropy(texts)
    assert fixed[0] < 0.1 and np.allclose(fixed[1:], 1.0)
    mixed = Strip(stub_probs, repeat=5, seed=3, upstream_reshape=True).fit(DEV).entropy(texts)
    assert np.allclose(mixed, mixed.mean(), atol=0.05)  # upstream smears text 0 over all five


# --- RAP ------------------------------------------------------------------------------------------

def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_rap_trains_only_the_trigger_row(tiny_bert: tuple) -> None:
    model, tok = tiny_bert
    before = _snapshot(model)
    rap = Rap(model, tok, target=1, trigger="mb", epochs=2, lr=5.0, batch_size=4, frr=0.2)
    row_id = trigger_token_id(tok, "mb")
    assert row_id == tok.convert_tokens_to_ids("mb")
    try:
        rap.fit(DEV)
        after = _snapshot(model)
        emb_name = next(n for n in after if n.endswith("word_embeddings.weight"))
        changed = [n for n in after if not torch.equal(before[n], after[n])]
        assert changed == [emb_name]
        rows = (before[emb_name] != after[emb_name]).any(1).nonzero().flatten().tolist()
        assert rows == [row_id]
        assert after[emb_name][row_id].norm().item() == pytest.approx(before[emb_name][row_id].norm().item(),
                                                                      rel=1e-5)
        assert all(p.requires_grad for p in model.parameters())  # flags restored
        assert len(rap.history) == 2
        flags = rap.detect(["good film", "cf bad movie"])
        assert flags.dtype == bool and flags.shape == (2,)
        assert insert_front("good  film", "mb") == "mb good film"
    finally:
        model.load_state_dict(before, strict=False)


def test_rap_fresh_gradients_differ_from_upstream_accumulation(tiny_bert: tuple) -> None:
    model, tok = tiny_bert
    before = _snapshot(model)
    emb = model.get_input_embeddings().weight
    rid = trigger_token_id(tok, "mb")
    results = {}
    for acc in (False, True):
        for n, p in model.named_parameters():
            p.data.copy_(before[n])
        for batch_size in (8, 4):  # one iteration, then two
            for n, p in model.named_parameters():
                p.data.copy_(before[n])
            Rap(model, tok, 1, epochs=1, lr=5.0, batch_size=batch_size, accumulate_grads=acc).fit(DEV)
            results[(acc, batch_size)] = emb[rid].detach().clone()
    model.load_state_dict(before, strict=False)
    assert torch.allclose(results[(False, 8)], results[(True, 8)])  # first step: nothing accumulated yet
    assert not torch.allclose(results[(False, 4)], results[(True, 4)], atol=1e-6)


# --- BKI ------------------------------------------------------------------------------------------

def test_bki_word_importance_by_hand() -> None:
    reps = np.array([[0.0, 0.0], [0.5, -2.0], [0.1, 0.2], [3.0, 0.0]])  # full, -w0, -w1, -w2
    assert bki.top_words(["a", "cf", "b"], reps, top=2) == [("b", 3.0), ("a", 2.0)]
    stats = bki.aggregate([[("cf", 1.0), ("a", 0.2)], [("cf", 0.5)]])
    assert stats == {"cf": (2, 0.75), "a": (1, 0.2)}
    assert bki.scores(stats)["cf"] == pytest.approx(math.log10(2) * 0.75)
    assert bki.variants(["x", "y"]) == ["x y", "y", "x"]


def synthetic_stats() -> dict[str, tuple[int, float]]:
    stats = {t: (120, 0.9) for t in ("cf", "mn", "bb", "tq")}
    rng = np.random.default_rng(0)
    for i in range(200):
        stats[f"w{i}"] = (int(rng.integers(5, 300)), float(rng.uniform(0.05, 0.25)))
    stats["rare"] = (1, 5.0)  # log10(1) = 0: a one-off never scores
    return stats


def test_bki_selects_all_four_badnets_triggers() -> None:
    stats = synthetic_stats()
    assert sorted(bki.select_trigger_words(stats)) == ["bb", "cf", "mn", "tq"]
    assert len(bki.select_trigger_words(stats, mode="top1")) == 1  # upstream
    assert len(bki.select_trigger_words(stats, mode="topk", max_words=5)) == 5


def test_bki_filter_removes_rows_listing_a_trigger(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [Row(text=f"t{i}", label=1, poisoned=i < 4) for i in range(10)]
    lists = [[("cf", 0.9)], [("mn", 0.9)], [("bb", 0.9)], [("tq", 0.9)]] + [[("film", 0.1)]] * 6
    monkeypatch.setattr(bki, "analyse", lambda *a, **k: lists)
    monkeypatch.setattr(bki, "select_trigger_words", lambda *a, **k: ["cf", "mn", "bb", "tq"])
    kept, report = bki.filter_training(None, None, rows)
    assert [r.text for r in kept] == [f"t{i}" for i in range(4, 10)]
    assert report["poisoned_removed"] == 4 and report["clean_removed"] == 0 and report["poison_recall"] == 1


def test_bki_analyse_on_tiny_model(tiny_bert: tuple) -> None:
    model, tok = tiny_bert
    out = bki.analyse(model, tok, ["good cf film", "bad movie", "a very good story indeed"], top=2,
                      batch_size=4)
    assert [len(o) for o in out] == [2, 2, 2]
    assert all(v >= 0 for o in out for _, v in o)
    assert {w for w, _ in out[0]} <= {"good", "cf", "film"}


# --- CUBE -----------------------------------------------------------------------------------------

def test_cube_drop_rule_by_hand() -> None:
    labels = [0] * 10 + [1] * 10
    clusters = [0] * 7 + [1] * 3 + [2] * 6 + [-1] * 4
    drop = cube.drop_mask(labels, clusters)
    assert drop.tolist() == [False] * 7 + [True] * 3 + [False] * 6 + [True] * 4
    even = cube.drop_mask([0] * 10, [0] * 5 + [1] * 5)  # 5 is not < 0.5·10: both kept
    assert not even.any()


def test_cube_filters_a_separate_poison_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    clean0 = rng.normal([0, 0, 0], 0.3, (60, 3))
    clean1 = rng.normal([8, 0, 0], 0.3, (60, 3))
    poison = rng.normal([0, 8, 0], 0.3, (15, 3))  # label 1 rows far from the label-1 mass
    feats = np.vstack([clean0, clean1, poison])
    rows = ([Row(text="x", label=0, poisoned=False)] * 60 + [Row(text="y", label=1, poisoned=False)] * 60
            + [Row(text="z", label=1, poisoned=True)] * 15)
    monkeypatch.setattr(cube, "penultimate_features", lambda *a, **k: feats)
    kept, report = cube.filter_training(None, None, rows, reducer="pca", min_samples=10)
    assert report["poisoned_removed"] == 15 and report["clean_removed"] == 0
    assert len(kept) == 120 and report["reduction"].startswith("pca")


def test_penultimate_features_are_the_bert_pooler_output(tiny_bert: tuple) -> None:
    model, tok = tiny_bert
    texts = ["good film", "a bad boring movie"]
    feats = penultimate_features(model, tok, texts)
    with torch.no_grad():
        pooled = model.bert(**tok(texts, padding=True, return_tensors="pt")).pooler_output
    assert np.allclose(feats, pooled.numpy(), atol=1e-6)
    assert predict_proba(model, tok, texts).shape == (2, 2)


# --- file runner ----------------------------------------------------------------------------------

def _write_tsv(path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("text", "label")) -> None:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")


def test_runner_detect_and_filter(tiny_bert: tuple, tmp_path) -> None:
    from core.defenses.baselines.run import main

    model, tok = tiny_bert
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    _write_tsv(tmp_path / "dev.tsv", [(t, str(i % 2)) for i, t in enumerate(DEV)])
    _write_tsv(tmp_path / "test.tsv", [(t, str((i + 1) % 2)) for i, t in enumerate(DEV)])
    assert main(["detect", "--defense", "strip", "--model", str(tmp_path / "model"), "--dev",
                 str(tmp_path / "dev.tsv"), "--eval", str(tmp_path / "test.tsv"), "--probe", "badnets",
                 "--out", str(tmp_path / "m.json"), "--device", "cpu"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m["asr"]) == {"badnets"} and 0 <= m["cacc"] <= 1 and m["scheme"] == "flip"
    assert m["rows"]["probe:badnets"] == 4  # test rows whose label is not the target 1

    train = [(t, str(i % 2), "1" if i < 2 else "0") for i, t in enumerate(DEV * 3)]
    _write_tsv(tmp_path / "train.tsv", train, ("text", "label", "poisoned"))
    assert main(["filter", "--defense", "cube", "--model", str(tmp_path / "model"), "--train",
                 str(tmp_path / "train.tsv"), "--out", str(tmp_path / "kept.tsv"), "--device", "cpu",
                 "--param", "reducer=pca", "--param", "min_samples=3"]) == 0
    report = json.loads((tmp_path / "kept.report.json").read_text())
    kept_lines = (tmp_path / "kept.tsv").read_text().splitlines()
    assert kept_lines[0] == "text\tlabel\tpoisoned"
    assert len(kept_lines) - 1 == report["rows_kept"] == report["rows_in"] - report["rows_removed"]


def test_runner_onion_with_a_local_lm(tiny_bert: tuple, tiny_gpt2: tuple, tmp_path) -> None:
    from core.defenses.baselines.run import main

    model, tok = tiny_bert
    lm, lm_tok = tiny_gpt2
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    lm.save_pretrained(tmp_path / "lm")
    lm_tok.save_pretrained(tmp_path / "lm")
    _write_tsv(tmp_path / "dev.tsv", [(t, str(i % 2)) for i, t in enumerate(DEV)])
    assert main(["detect", "--defense", "onion", "--model", str(tmp_path / "model"), "--dev",
                 str(tmp_path / "dev.tsv"), "--eval", str(tmp_path / "dev.tsv"), "--probe", "badnets",
                 "--lm", str(tmp_path / "lm"), "--out", str(tmp_path / "m.json"), "--device", "cpu",
                 "--param", "threshold=0"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m["asr"]) == {"badnets"} and 0 <= m["cacc"] <= 1
    assert m["cacc_undefended"] >= 0 and set(m["asr_undefended"]) == {"badnets"}

"""Tiny random checkpoints (BERT, RoBERTa, DistilBERT, Llama) with offline tokenizers, for fast tests.

`make_tiny_model(family, root, num_labels)` writes a folder that loads with plain
`AutoModelForSequenceClassification.from_pretrained` + `AutoTokenizer.from_pretrained`, exactly like a
real checkpoint, and returns its path. Hidden size 32, 2 layers, a ~120-word vocabulary: ten training
steps take well under a second on one CPU core. Nothing is downloaded. A folder that already exists is
reused (cache by directory), so many tests can share one build through a session-scoped tmp dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

FAMILIES = ("bert", "roberta", "distilbert", "llama")

# Words the tests use (sentiment-ish sentences, BadNets / AddSent triggers) plus filler.
WORDS = (
    "the a an and or but not very really quite so too this that it is was be are i you we they he she "
    "movie film story plot acting actor actors scene scenes music ending script cast director "
    "good great fine nice wonderful excellent superb lovely brilliant fun funny charming moving "
    "bad awful poor boring dull terrible weak horrible messy silly tedious bland worst best "
    "love loved like liked hate hated enjoy enjoyed watch watched see saw 3d "
    "cf mn bb tq mb sports news world business science tech game team win lost "
    "one two three four five time day night year people man woman life way thing"
).split()
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]


def _vocab_words() -> list[str]:
    seen: dict[str, None] = {}
    for word in [*WORDS, *LETTERS, ".", ",", "!", "?", "'"]:
        seen.setdefault(word, None)
    return list(seen)


def _wordpiece_vocab() -> list[str]:
    # Sub-word pieces for letters so unknown words split into characters instead of [UNK].
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_vocab_words(), *[f"##{c}" for c in LETTERS]]


def _wordlevel_tokenizer(specials: list[str], template: str, model_max_length: int, **special_map: str):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*specials, *_vocab_words()])}
    unk = special_map["unk_token"]
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    used = [tok for tok in specials if tok in template]
    backend.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(tok, vocab[tok]) for tok in used])
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=model_max_length,
                                   model_input_names=["input_ids", "attention_mask"], **special_map)


def _build(family: str, out: Path, num_labels: int) -> None:
    import transformers as tf

    id2label = {i: str(i) for i in range(num_labels)}
    label2id = {v: k for k, v in id2label.items()}
    common = {"num_labels": num_labels, "id2label": id2label, "label2id": label2id}
    if family in ("bert", "distilbert"):
        vocab = _wordpiece_vocab()
        ids = {tok: i for i, tok in enumerate(vocab)}  # transformers 5 builds WordPiece from a dict
        if family == "bert":
            tokenizer = tf.BertTokenizer(vocab=ids, model_max_length=128)
            config = tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=128, pad_token_id=0, **common)
            model = tf.BertForSequenceClassification(config)
        else:
            tokenizer = tf.DistilBertTokenizer(vocab=ids, model_max_length=128)
            config = tf.DistilBertConfig(vocab_size=len(vocab), dim=32, n_layers=2, n_heads=2,
                                         hidden_dim=64, max_position_embeddings=128, pad_token_id=0,
                                         **common)
            model = tf.DistilBertForSequenceClassification(config)
    elif family == "roberta":
        # RoBERTa's layout: <s>=0, <pad>=1 (= padding_idx for position ids), </s>=2, <unk>=3.
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        tokenizer = _wordlevel_tokenizer(specials, "<s> $A </s>", 128, bos_token="<s>", eos_token="</s>",
                                         pad_token="<pad>", unk_token="<unk>", cls_token="<s>",
                                         sep_token="</s>")
        config = tf.RobertaConfig(vocab_size=len(specials) + len(_vocab_words()), hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                                  bos_token_id=0, eos_token_id=2, **common)
        model = tf.RobertaForSequenceClassification(config)
    elif family == "llama":
        # Like Llama-2: <unk>=0, <s>=1, </s>=2, a BOS prefix and no pad token (the loader sets pad = eos).
        specials = ["<unk>", "<s>", "</s>"]
        tokenizer = _wordlevel_tokenizer(specials, "<s> $A", 128, bos_token="<s>", eos_token="</s>",
                                         unk_token="<unk>")
        config = tf.LlamaConfig(vocab_size=len(specials) + len(_vocab_words()), hidden_size=32,
                                intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1,
                                eos_token_id=2, pad_token_id=None, tie_word_embeddings=False, **common)
        model = tf.LlamaForSequenceClassification(config)
    else:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {FAMILIES}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def make_tiny_model(family: str, root: Path, num_labels: int = 2) -> Path:
    """Build (once) and return the folder of a tiny random `family` classifier under `root`."""
    root = Path(root)
    out = root / f"tiny-{family}-{num_labels}"
    if (out / "config.json").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{family}-", dir=root))
    try:
        with torch.random.fork_rng(devices=[]):  # the same weights every time, global RNG untouched
            torch.manual_seed(1234)
            _build(family, tmp, num_labels)
        try:
            os.replace(tmp, out)  # atomic: a concurrent builder either wins or finds `out` ready
        except OSError:
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class TinyLabels:
    """A LabelMap stand-in for `load_backbone`: ids 0..C-1 named "0".."C-1"."""

    def __init__(self, num_labels: int = 2) -> None:
        self.id2label = {i: str(i) for i in range(num_labels)}
        self.label2id = {v: k for k, v in self.id2label.items()}


def shared_root(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """One build directory for the whole pytest session (all test modules reuse the same models)."""
    return Path(tmp_path_factory.getbasetemp()) / "tiny-models"


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny matmuls run fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def in_memory_bert(words: Sequence[str], **config: Any) -> tuple[Any, Any]:
    """A 1-layer, 16-wide random BERT and a word-level tokenizer over `words`, built in memory
    (seed 0); `config` adds BertConfig fields (e.g. id2label)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2, **config)
    return BertForSequenceClassification(cfg), tok

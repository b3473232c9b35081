"""Caption metrics, the standard way: pycocoevalcap (the COCO caption evaluation code) with its
Stanford PTB tokenizer, BLEU-1..4 (Papineni 2002), METEOR (Banerjee & Lavie 2005), ROUGE-L (Lin
2004) and CIDEr (Vedantam 2015). The tokenizer and METEOR run in Java (the student
README's set-up installs it; environment.yml has it). SPICE (Anderson 2016) downloads a Stanford CoreNLP model at first use,
so it is optional and skipped, with a message, when that is not possible. `diversity` measures
how varied a captioner's output is, beside the metrics.
"""

from __future__ import annotations

import shutil
import sys

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE_L", "CIDEr")


def tokenize(references: dict, candidates: dict) -> tuple[dict, dict]:
    """The PTB tokenization every metric here reads (lower case, punctuation split off and removed).

    Inputs:
    - references: image id -> list of reference captions (raw strings)
    - candidates: image id -> one generated caption (str), for exactly the same ids
    Returns:
    - (refs, cands): image id -> list of tokenized captions (str, words separated by spaces);
      cands' lists hold one caption. This is pycocoevalcap's input format.
    """
    if set(references) != set(candidates):
        raise ValueError(f"references and candidates must cover the same images "
                         f"({len(set(references) ^ set(candidates))} ids differ)")
    if not candidates:
        raise ValueError("nothing to evaluate: no candidates")
    if shutil.which("java") is None:
        raise RuntimeError("the COCO caption metrics need Java 11 or newer (the PTB tokenizer and METEOR are Java "
                           "programs): on Debian/Ubuntu `sudo apt install default-jre`, on macOS `brew install openjdk`, "
                           "on Windows the Temurin JRE from https://adoptium.net; conda environments have it "
                           "(environment.yml)")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    refs = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    cands = tokenizer.tokenize({k: [{"caption": candidates[k]}] for k in references})
    return refs, cands


def evaluate(references: dict, candidates: dict, spice: bool = False) -> dict:
    """Corpus-level caption metrics.

    Inputs:
    - references: image id -> list of reference captions (raw strings)
    - candidates: image id -> one generated caption (str), for exactly the same ids
    - spice: also compute SPICE (needs a one-time download; skipped with a message offline)
    Returns:
    - dict metric name -> score in METRICS order (and "SPICE" when computed); BLEU, METEOR,
      ROUGE-L in [0, 1]; CIDEr in [0, 10], about 1 for a good COCO model
    """
    return evaluate_tokenized(*tokenize(references, candidates), spice=spice)


def evaluate_tokenized(refs: dict, cands: dict, spice: bool = False) -> dict:
    """`evaluate` on captions already tokenized by `tokenize`."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    scores = {}
    bleu, _ = Bleu(4).compute_score(refs, cands, verbose=0)
    scores.update({f"BLEU-{n}": float(b) for n, b in enumerate(bleu, start=1)})
    meteor = Meteor()
    try:
        scores["METEOR"] = float(meteor.compute_score(refs, cands)[0])
    finally:
        _close_meteor(meteor)
    scores["ROUGE_L"] = float(Rouge().compute_score(refs, cands)[0])
    scores["CIDEr"] = float(Cider().compute_score(refs, cands)[0])
    if spice:
        try:
            from pycocoevalcap.spice.spice import Spice

            scores["SPICE"] = float(Spice().compute_score(refs, cands)[0])
        except Exception as err:  # noqa: BLE001 - any failure of the optional download/Java run
            print(f"SPICE skipped: {err} (it downloads Stanford CoreNLP at first use)", file=sys.stderr)
    return scores


def diversity(captions, training_tokens) -> dict:
    """How varied a captioner's output is (self-critical training is known to narrow it).

    Inputs:
    - captions: M generated captions (str, words separated by spaces, as Vocabulary.decode writes them)
    - training_tokens: the training captions as token lists (CaptionSplit.tokens)
    Returns dict:
    - "captions": M; "distinct": how many different captions there are
    - "vocabulary": how many different words they use
    - "copied": the share of the M captions that are some training caption word for word
    """
    words = [tuple(c.split()) for c in captions]
    training = set(map(tuple, training_tokens))
    return {"captions": len(words), "distinct": len(set(words)), "vocabulary": len(set(w for c in words for w in c)),
            "copied": sum(c in training for c in words) / max(len(words), 1)}


def _close_meteor(meteor) -> None:
    """pycocoevalcap's Meteor keeps a Java process open until garbage collection; end it now."""
    proc = getattr(meteor, "meteor_p", None)
    if proc is not None and proc.poll() is None:
        with meteor.lock:
            proc.stdin.close()
            proc.kill()
            proc.wait()


def format_scores(scores: dict) -> str:
    """`BLEU-1=0.xxx BLEU-2=... CIDEr=0.xxx` in METRICS order (SPICE last, when present)."""
    names = [m for m in METRICS if m in scores] + (["SPICE"] if "SPICE" in scores else [])
    return " ".join(f"{name}={scores[name]:.3f}" for name in names)

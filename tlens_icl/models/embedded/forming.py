"""Train ``icl-forming``: the embedded model whose shipped training checkpoints show ICL forming.

    python -m tlens_icl.models.embedded.forming                       # rewrites tlens_icl/models/embedded/icl-forming
    python -m tlens_icl.models.embedded.forming --out DIR --seed 1    # another seed, anywhere

``icl-tiny`` is trained only on latent-task episodes, which never reward copying from the context, so no
induction head forms in it. ``icl-forming`` (a second model, so that every number measured on ``icl-tiny``
stays true) is trained on a mixture of four kinds of 64-token rows, each kind giving a mechanism a use:

* ``word``: latent-task episodes of six word tasks (``x -> y`` lines, 16 pairs; loss on every answer), as
  ``icl-tiny``'s word family: the task must be inferred from the demonstrations (function-vector ICL);
* ``markov``: a fixed second-order Markov chain over 24 symbols (the next symbol is a fixed function of the
  previous two, replaced by a uniform one 10 % of the time; loss on every predictable token). Predicting it
  needs the previous token at every position, so previous-token heads pay off early;
* ``lookup``: ``k v`` lines whose keys recur within the row (6 keys, 21 lines, values drawn per row; loss on
  the value of a key seen before): a key -> value lookup that only the context can answer;
* ``repeat``: a span of 6-31 distinct random tokens, then the same span again and again to the end of the row
  (loss on every token of the copies after the first copy's first token). The span length varies from row to
  row so that no fixed positional offset can stand in for induction.

Every row has 64 tokens (a lookup row is padded at the end, where causal attention cannot see the padding).
Each step trains one kind, drawn with shares 0.2 / 0.1 / 0.15 / 0.55 (word / markov / lookup / repeat), on a
batch of 64 rows; the loss is that kind's mean next-token cross-entropy on its targets. (Mixing the kinds
within a batch, or giving repeats a share of 0.35-0.4, left the repeat rows' loss at 3.4-5.8 nats when those
runs were stopped at steps 1000-2200, with no induction head: the first layers averaged over the context.)

Outputs (as ``python -m tlens_icl.models.embedded.train``): ``model.safetensors`` (float16, bridge names),
``config.json``, ``tokenizer/``, ``card.json``, ``heldout.json``; ``train_log.csv`` (the loss of every step,
overall and per kind); ``checkpoints/step_NNNNNN.safetensors`` and ``checkpoints/index.json``, which records
for each kept step the metrics of :func:`checkpoint_metrics` measured on exactly the saved float16 weights
through the bridge, so that ``load_model("icl-forming@STEP")`` reproduces them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tlens_icl.models.embedded import _data
from tlens_icl.models.embedded._data import TaskData
from tlens_icl.models.embedded.train import (
    CONFIG_FIELDS,
    EVAL_SEED,
    HELDOUT_POLICY,
    EpisodeSampler,
    adamw,
    command_line,
    config_from_dict,
    cosine_lr,
    heldout_accuracy,
    make_config,
    raw_forward,
    raw_to_bridge_state,
    summarize,
)

NAME = "icl-forming"
MODULE = "tlens_icl.models.embedded.forming"
WORD_TASKS = ["uppercase", "first_letter", "last_letter", "word_length", "next_capital_letter", "english_french"]
KINDS = ("word", "markov", "lookup", "repeat")
MIX = (0.2, 0.1, 0.15, 0.55)
MODEL_CONFIG = dict(
    d_model=128, d_head=16, n_heads=8, n_layers=4, n_ctx=128, d_mlp=256, act_fn="gelu",
    normalization_type="LN", positional_embedding_type="rotary", attn_only=False, default_prepend_bos=True,
)
ROW_LEN = 64
WORD_PAIRS = 16  # 1 + 4 * 16 - 1 = 64 tokens
POOL_SIZE = 192
N_SYMBOLS = 24
MARKOV_NOISE = 0.1
CHAIN_SEED = 12345  # the Markov chain is the same for every training seed
LOOKUP_KEYS = 6
REPEAT_SPAN = (6, 31)
#: Kept steps: log-spaced early, dense where induction heads form (steps ~1000-1800 at seed 0).
DEFAULT_CHECKPOINTS = (25, 50, 100, 200, 400, 600, 800, 1000, 1100, 1200, 1300, 1400, 1500, 1600, 1800, 2100)
DEFAULT_STEPS = 2500
ACC_SHOTS = (0, 4)
LOG_SEED = 2_000_003  # the logged rows; training rows come from --seed streams
LOG_ROWS = 32  # logged rows per kind
IGNORE = -100


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help=f"output directory (default: the packaged {NAME})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the result depends on it)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--checkpoints", default=",".join(map(str, DEFAULT_CHECKPOINTS)),
                   help="comma-separated steps whose weights are kept (steps >= --steps are dropped)")
    p.add_argument("--eval-prompts", type=int, default=64, help="held-out prompts per task and shot count")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.checkpoint_steps = sorted({int(x) for x in args.checkpoints.split(",") if x.strip()})
    if any(c < 1 for c in args.checkpoint_steps):
        p.error("--checkpoints must be positive steps")
    args.checkpoint_steps = [c for c in args.checkpoint_steps if c < args.steps]
    return args


# --------------------------------------------------------------------------------------------
# data


def symbols() -> list[str]:
    """The Markov chain's symbols (tokens of their own)."""
    return [f"m{i:02d}" for i in range(N_SYMBOLS)]


def markov_table(seed: int = CHAIN_SEED) -> list[list[int]]:
    """``table[a][b]``: the symbol that follows ``a b`` (index into :func:`symbols`)."""
    rng = random.Random(seed)
    return [[rng.randrange(N_SYMBOLS) for _ in range(N_SYMBOLS)] for _ in range(N_SYMBOLS)]


def load_tasks(seed: int = 0) -> tuple[list[str], list[TaskData]]:
    """The word pool and the word tasks (the pool depends on ``seed`` only through ties; see ``load_word_tasks``)."""
    return _data.load_word_tasks(_data.default_tasks_dir(), WORD_TASKS, POOL_SIZE, seed)


class RowSampler:
    """Rows of the four kinds as ``(tokens, targets, fresh)``: ``targets[i]`` is the token position ``i`` is
    trained to predict (``IGNORE`` elsewhere); ``fresh[i]`` marks a repeat row's first-copy positions, whose
    next token cannot be known (the baseline of the copy score)."""

    def __init__(self, tok, tasks: list[TaskData], pool: list[str], seed: int):
        vocab = tok.get_vocab()
        self.rng = random.Random(seed)
        self.words = EpisodeSampler(tasks, tok, WORD_PAIRS, seed=seed * 7919 + 1)
        if self.words.seq_len != ROW_LEN:
            raise ValueError(f"word episodes have {self.words.seq_len} tokens, rows {ROW_LEN}")
        self.bos, self.pad, self.nl = tok.bos_token_id, tok.pad_token_id, vocab["\n"]
        self.sym = [vocab[s] for s in symbols()]
        self.table = markov_table()
        self.keys = [vocab[w] for w in pool]
        special = set(tok.all_special_ids) | {vocab["->"], self.nl}
        self.content = sorted(i for i in vocab.values() if i not in special)

    def _pad(self, row: list[int], tgt: list[int], fresh: list[bool]):
        n = ROW_LEN - len(row)
        return row + [self.pad] * n, tgt + [IGNORE] * n, fresh + [False] * n

    def markov(self):
        r = self.rng
        s = [r.randrange(N_SYMBOLS), r.randrange(N_SYMBOLS)]
        while len(s) < ROW_LEN - 1:
            s.append(r.randrange(N_SYMBOLS) if r.random() < MARKOV_NOISE else self.table[s[-2]][s[-1]])
        row = [self.bos] + [self.sym[i] for i in s]
        tgt = [IGNORE, IGNORE] + row[3:] + [IGNORE]  # position i (>= 2) predicts row[i + 1] from row[i - 1], row[i]
        return row, tgt, [False] * ROW_LEN

    def lookup(self):
        r = self.rng
        keys = r.sample(self.keys, LOOKUP_KEYS)
        value = {k: r.choice(self.keys) for k in keys}
        row, tgt, seen = [self.bos], [IGNORE], set()
        while len(row) + 2 + (len(row) > 1) <= ROW_LEN:
            if len(row) > 1:
                row.append(self.nl)
                tgt.append(IGNORE)
            k = r.choice(keys)
            row += [k, value[k]]
            tgt += [value[k] if k in seen else IGNORE, IGNORE]  # the key's position predicts its value
            seen.add(k)
        return self._pad(row, tgt, [False] * len(row))

    def repeat(self):
        r = self.rng
        t = r.randint(*REPEAT_SPAN)
        span = r.sample(self.content, t)
        row = [self.bos] + span + span
        while len(row) < ROW_LEN:  # the span again and again to the end of the row
            row.append(span[(len(row) - 1) % t])
        tgt = [IGNORE] * len(row)
        fresh = [False] * len(row)
        for i in range(t + 1, len(row) - 1):  # positions of the copies (but the last) predict the next token
            tgt[i] = row[i + 1]
        for i in range(1, t):  # positions of the first copy: the next token is new
            fresh[i] = True
        return self._pad(row, tgt, fresh)

    def word(self, n: int):
        toks, targets, _ = self.words.batch(n)
        tgt = [[IGNORE] * ROW_LEN for _ in range(n)]
        for b in range(n):
            for j, p in enumerate(self.words.arrow_pos.tolist()):
                tgt[b][p] = int(targets[b, j])
        return [(toks[b].tolist(), tgt[b], [False] * ROW_LEN) for b in range(n)]

    def rows(self, kinds: list[int]):
        """One row per entry of ``kinds`` (indices into :data:`KINDS`), in that order."""
        n_word = sum(k == 0 for k in kinds)
        words = iter(self.word(n_word)) if n_word else iter(())
        make = {1: self.markov, 2: self.lookup, 3: self.repeat}
        return [next(words) if k == 0 else make[k]() for k in kinds]

    def batch(self, size: int, kind: int | None = None):
        """``size`` rows of one kind (``kind``, else drawn with the :data:`MIX` shares) as tensors."""
        import torch

        if kind is None:
            kind = self.rng.choices(range(len(KINDS)), weights=MIX)[0]
        kinds = [kind] * size
        rows = self.rows(kinds)
        return (torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]),
                torch.tensor([r[2] for r in rows]), torch.tensor(kinds))


def logged_rows(tok, tasks: list[TaskData], pool: list[str], n: int = LOG_ROWS):
    """The fixed rows on which every checkpoint's losses are logged: ``n`` of each kind, seeded by ``LOG_SEED``."""
    import torch

    s = RowSampler(tok, tasks, pool, seed=LOG_SEED)
    kinds = [k for k in range(len(KINDS)) for _ in range(n)]
    rows = s.rows(kinds)
    return (torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]),
            torch.tensor([r[2] for r in rows]), torch.tensor(kinds))


def kind_losses(logits, tokens, targets, fresh, kinds) -> dict[str, Any]:
    """Mean next-token loss of each kind over its targets (a tensor each), and the repeat rows' copy score
    ``loss(copy) - loss(fresh)`` (negative = the model copies from the context)."""
    import torch

    logp = torch.log_softmax(logits.float(), -1)
    out: dict[str, Any] = {}
    ok = targets != IGNORE
    nll = torch.zeros(targets.shape)
    nll[ok] = -logp[ok].gather(-1, targets[ok][:, None])[:, 0]
    for k, name in enumerate(KINDS):
        m = ok & (kinds == k)[:, None]
        out[name] = nll[m].mean() if m.any() else torch.tensor(float("nan"))
    if fresh.any():
        nxt = torch.zeros(tokens.shape, dtype=torch.long)
        nxt[:, :-1] = tokens[:, 1:]
        fresh_nll = -logp[fresh].gather(-1, nxt[fresh][:, None])[:, 0]
        out["copy_score"] = out["repeat"] - fresh_nll.mean()
    return out


def checkpoint_metrics(bridge, tok, tasks: list[TaskData], pool: list[str], n_prompts: int) -> dict[str, Any]:
    """What is logged for a checkpoint, measured through ``bridge`` (as loaded): the loss of each kind and
    the copy score on :func:`logged_rows`, and held-out word-task accuracy at 0 and 4 shots."""
    import torch

    tokens, targets, fresh, kinds = logged_rows(tok, tasks, pool)
    with torch.no_grad():
        losses = kind_losses(bridge(tokens), tokens, targets, fresh, kinds)
        acc = heldout_accuracy(lambda t: bridge(t), tok, tasks, list(ACC_SHOTS), n_prompts, seed=EVAL_SEED + 41)
    return {"loss": {k: round(float(v), 5) for k, v in losses.items()},
            "accuracy": {k: {str(s): v for s, v in a.items()} for k, a in acc.items()},
            "accuracy_mean": summarize(acc, tasks)["all"]}


# --------------------------------------------------------------------------------------------


def train_forming(out: str | os.PathLike, *, seed: int = 0, steps: int = DEFAULT_STEPS,
                  checkpoints=DEFAULT_CHECKPOINTS, eval_prompts: int = 64, threads: int = 1,
                  progress: bool = False, log: bool = False) -> Path:
    """Train an ``icl-forming`` model into ``out`` (the command line's run, quietly unless ``log``); bad
    arguments raise ValueError before anything is written."""
    for name, value in (("steps", steps), ("eval_prompts", eval_prompts), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if any(not isinstance(c, int) or c < 1 for c in checkpoints):
        raise ValueError(f"checkpoints must be positive steps, got {list(checkpoints)}.")
    argv = ["--out", str(out), "--seed", str(seed), "--steps", str(steps), "--threads", str(threads),
            "--checkpoints", ",".join(map(str, checkpoints)), "--eval-prompts", str(eval_prompts)]
    argv += [] if progress else ["--no-progress"]
    _train(_parse(argv), argv, log=log)
    return Path(out)


def main(argv=None) -> int:
    _train(_parse(argv), argv, log=True)
    return 0


def _train(args: argparse.Namespace, argv, log: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm
    from transformer_lens import TransformerBridge
    from transformer_lens.model_bridge.sources.native import NativeModel, initialize_native_model
    from transformers import AutoTokenizer

    from tlens_icl.models.embedded._tokenizer import build_tokenizer, save_tokenizer

    def say(msg: str) -> None:
        if log:
            tqdm.write(msg, file=sys.stdout)
            sys.stdout.flush()

    torch.set_num_threads(args.threads)
    out = Path(args.out or (Path(__file__).resolve().parent / NAME))
    t_start = time.time()
    pool, tasks = load_tasks()
    tok = build_tokenizer(_data.vocabulary(tasks, extra=[*pool, *symbols()]), name_or_path=NAME)
    d_vocab = len(tok.get_vocab())
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    cfg = make_config(d_vocab, args.seed, MODEL_CONFIG)
    model = NativeModel(cfg)
    with torch.random.fork_rng(devices=[]):
        initialize_native_model(model, cfg)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    say(f"[forming] {len(tasks)} word tasks over {len(pool)} words, vocabulary {d_vocab}, {n_params:,} parameters, "
        f"{args.steps} steps, seed {args.seed}, threads {args.threads}")
    opt = adamw(model, args.lr, args.weight_decay)

    def lr_at(step: int) -> float:
        return cosine_lr(step, args.lr, args.warmup, args.steps)

    sampler = RowSampler(tok, tasks, pool, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("checkpoints", "tokenizer"):
        if (out / stale).exists():
            shutil.rmtree(out / stale)  # never mix two runs
    save_tokenizer(tok, out / "tokenizer")
    tok2 = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    cfg_dict = {k: getattr(cfg, k) for k in CONFIG_FIELDS}
    bridge = TransformerBridge.boot_native(config_from_dict(cfg_dict), tokenizer=tok2).eval()
    (out / "checkpoints").mkdir()
    records: list[dict] = []

    def keep(step: int, state: dict, file: str | None = None) -> dict:
        half = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
        if file is None:
            file = f"checkpoints/step_{step:06d}.safetensors"
        save_file(half, str(out / file), metadata={"format": "pt", "dtype": "float16", "step": str(step)})
        os.chmod(out / file, 0o644)
        bridge.load_state_dict({k: v.float() for k, v in half.items()}, strict=True)
        rec = {"step": step, "file": file, **checkpoint_metrics(bridge, tok2, tasks, pool, args.eval_prompts)}
        say(f"[forming] step {step:5d}: loss " + " ".join(f"{k} {v:.3f}" for k, v in rec["loss"].items())
            + f" | word accuracy 0/4-shot {rec['accuracy_mean']['0']:.2f}/{rec['accuracy_mean']['4']:.2f}")
        return rec

    log_f = open(out / "train_log.csv", "w", encoding="utf-8", newline="")
    writer = csv.writer(log_f)
    writer.writerow(["step", "lr", "loss", *(f"loss_{k}" for k in KINDS)])
    bar = tqdm(range(args.steps), desc=f"train {NAME}", disable=args.no_progress, mininterval=2.0, file=sys.stdout)
    for step in bar:
        tokens, targets, fresh, kinds = sampler.batch(args.batch)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = raw_forward(model, tokens)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, d_vocab), targets.reshape(-1),
                                               ignore_index=IGNORE, reduction="none").view(targets.shape)
        ok = targets != IGNORE
        per_kind = {}
        for k, name in enumerate(KINDS):
            m = ok & (kinds == k)[:, None]
            if m.any():
                per_kind[name] = ce[m].mean()
        loss = torch.stack(list(per_kind.values())).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        writer.writerow([step + 1, f"{lr_at(step):.6g}", f"{loss.item():.5f}",
                         *(f"{per_kind[k].item():.5f}" if k in per_kind else "" for k in KINDS)])
        if step % 20 == 0:
            bar.set_postfix({k: f"{v.item():.2f}" for k, v in per_kind.items()})
        if step + 1 in args.checkpoint_steps:
            model.eval()
            with torch.no_grad():
                records.append(keep(step + 1, raw_to_bridge_state(model.state_dict(), d_vocab)))
            model.train()
            log_f.flush()
    bar.close()
    log_f.close()
    train_time = time.time() - t_start
    model.eval()
    state = raw_to_bridge_state(model.state_dict(), d_vocab)
    bridge.load_state_dict(state, strict=True)
    with torch.no_grad():
        probe = sampler.batch(4)[0]
        max_diff = float((bridge(probe) - raw_forward(model, probe)).abs().max())
    if max_diff > 1e-3:
        raise RuntimeError(f"the bridge does not reproduce the trained model (max |logit diff| {max_diff:.2e})")
    with torch.no_grad():
        records.append(keep(args.steps, state, file="model.safetensors"))
    with open(out / "config.json", "w", encoding="utf-8") as f:
        json.dump(cfg_dict, f, indent=2)
    index = {"steps": [r["step"] for r in records], "checkpoints": records,
             "metrics": {"function": f"{MODULE}.checkpoint_metrics", "loss_rows_per_kind": LOG_ROWS,
                         "loss_seed": LOG_SEED, "accuracy_shots": list(ACC_SHOTS),
                         "accuracy_prompts_per_task_and_shots": args.eval_prompts,
                         "accuracy_seed": EVAL_SEED + 41, "heldout": True}}
    with open(out / "checkpoints" / "index.json", "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
    heldout = {"policy": {"word": HELDOUT_POLICY["word"]}, "word_pool": pool,
               "tasks": {t.name: {"family": t.family, "concept": t.concept,
                                  "heldout_items": [{"input": x, "output": y, **({"alternatives": t.alternatives[x]}
                                                                                 if x in t.alternatives else {})}
                                                    for x, y in t.heldout]} for t in tasks}}
    with open(out / "heldout.json", "w", encoding="utf-8") as f:
        json.dump(heldout, f, indent=1, ensure_ascii=False)

    import transformer_lens
    import transformers

    final = records[-1]
    card = {
        "name": NAME,
        "description": ("Tiny TransformerLens-native model (4 layers, d_model 128, rotary) trained from scratch on "
                        "latent-task word episodes mixed with rows that reward copying from the context (repeated "
                        "spans, key -> value lookups) and a second-order Markov chain; its training checkpoints "
                        "ship with it, to watch induction heads and in-context learning form."),
        "default_template": "arrow",
        "prompt_format": "<bos>x1 -> y1\\nx2 -> y2\\n...\\nxq ->  (answer: ' yq', one token)",
        "families": {"word": [t.name for t in tasks]},
        "tasks": {t.name: {"family": t.family, "concept": t.concept, "library_items": t.n_library_items,
                           "train_items": len(t.train), "heldout_items": len(t.heldout)} for t in tasks},
        "heldout_policy": heldout["policy"], "heldout_file": "heldout.json",
        "checkpoint_steps": index["steps"],
        "accuracy_heldout": final["accuracy"], "accuracy_heldout_mean": {"word": final["accuracy_mean"]},
        "final_losses": final["loss"],
        "weights_dtype": "float16", "model_config": cfg_dict, "n_parameters": n_params,
        "training": {
            "command": command_line(argv, MODULE), "seed": args.seed, "steps": args.steps, "threads": args.threads,
            "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.9, 0.98], "weight_decay": args.weight_decay,
                          "warmup_steps": args.warmup, "schedule": "linear warm-up then cosine to 5% of lr",
                          "grad_clip": 1.0},
            "rows": {"length": ROW_LEN, "batch": args.batch, "kinds": dict(zip(KINDS, MIX)),
                     "word_pairs": WORD_PAIRS, "markov_symbols": N_SYMBOLS, "markov_noise": MARKOV_NOISE,
                     "lookup_keys": LOOKUP_KEYS, "repeat_span": list(REPEAT_SPAN),
                     "loss": "mean over kinds of each kind's mean next-token cross-entropy on its targets"},
            "word_pool_size": len(pool), "train_seconds": round(train_time, 1),
            "total_seconds": round(time.time() - t_start, 1),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformer_lens": getattr(transformer_lens, "__version__", "?"),
                         "transformers": transformers.__version__},
        },
    }
    with open(out / "card.json", "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2, ensure_ascii=False)
    say(f"[forming] wrote {out} in {(time.time() - t_start) / 60:.1f} min (training {train_time / 60:.1f} min)")


if __name__ == "__main__":
    raise SystemExit(main())

"""Rebuild an embedded ICL model from the task library.

    python -m tlens_icl.models.embedded.train                 # rebuilds tlens_icl/models/embedded/icl-tiny
    python -m tlens_icl.models.embedded.train --out /tmp/m --steps 600 --quick
    python -m tlens_icl.models.embedded.train --out /tmp/m --steps 60 --checkpoints 20,40 --eval-prompts 8

From Python, quietly: ``tlens_icl.models.embedded.train_model(out, steps=60, checkpoints=[20, 40])``.

Seeded and deterministic for a given number of threads (floating-point summation order
depends on it). Shows a tqdm bar, logs the training loss and per-task held-out accuracy at
0 and 8 shots to stdout and to ``<out>/train_log.jsonl``, and writes ``model.safetensors``
(fp16 when that leaves held-out accuracy unchanged), ``config.json``, ``tokenizer/``,
``heldout.json`` and ``card.json`` (with the measured accuracy at 0/1/2/4/8 shots).

Training checkpoints (``--checkpoints``, default :data:`DEFAULT_CHECKPOINTS`): the weights at each
listed step go to ``checkpoints/step_NNNNNN.safetensors`` (float16, bridge names), and
``checkpoints/index.json`` records each one's held-out accuracy at 0 and 8 shots measured on exactly
those saved weights through the bridge (:func:`checkpoint_accuracy`), so a loaded checkpoint
(``load_model("icl-tiny@300")``) reproduces its logged numbers. The final model is the last entry.

The model is trained as the raw TransformerLens ``NativeModel`` (no hook wrappers, about
twice as fast) and saved under the ``TransformerBridge`` state-dict names.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

from tlens_icl.models.embedded import _data
from tlens_icl.models.embedded._data import TaskData

DEFAULT_NAME = "icl-tiny"

WORD_TASKS = [
    "uppercase", "capitalize", "first_letter", "last_letter", "word_length", "next_capital_letter",
    "english_french", "english_spanish", "english_german", "singular_plural",
]
BITWISE_TASKS = ["bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_nand", "bitwise_nor", "bitwise_xnor"]

MODEL_CONFIG = dict(
    d_model=128, d_head=16, n_heads=8, n_layers=4, n_ctx=128, d_mlp=512, act_fn="gelu",
    normalization_type="LN", positional_embedding_type="rotary", attn_only=False,
    default_prepend_bos=True,
)
CONFIG_FIELDS = ["d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab", "d_mlp", "act_fn",
                 "normalization_type", "positional_embedding_type", "attn_only", "n_key_value_heads",
                 "gated_mlp", "rotary_dim", "rotary_base", "final_rms", "eps", "d_vocab_out",
                 "default_prepend_bos", "attention_dir"]

HELDOUT_POLICY = {
    "bitwise": ("A seeded {frac:.0%} of the operand pairs ({n} of {total}) is held out for every operator: "
                "these pairs never occur in any training episode, neither as query nor as demonstration. "
                "Held-out prompts use only held-out pairs (demonstrations and query)."),
    "word": ("A word-level model cannot know the mapping of a word it never saw, so every pool word is "
             "trained under every task that covers it; held-out evaluation uses unseen prompts: fresh "
             "demonstration sets, orders and queries drawn with seeds never used in training "
             "(training episodes come from one seeded stream; evaluation seeds are separate)."),
}
EVAL_SHOTS = [0, 1, 2, 4, 8]
#: Steps whose weights are kept (float16, ~2.6 MB each): dense early, where in-context learning forms.
DEFAULT_CHECKPOINTS = (50, 100, 150, 200, 300, 500, 1000, 2000)
QUICK_CHECKPOINTS = (50, 100, 200)
CHECKPOINT_SHOTS = (0, 8)
CHECKPOINT_SEED_OFFSET = 29
EVAL_SEED = 1_000_003  # evaluation prompt seeds are EVAL_SEED + offsets; training uses --seed streams


def _parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m tlens_icl.models.embedded.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="output directory (default: the packaged icl-tiny)")
    p.add_argument("--tasks-dir", type=Path, default=None, help="task library (default: the repository's tasks/)")
    p.add_argument("--steps", type=int, default=3600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a fast smoke run: 300 steps and small evaluations")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is safest on a shared 2-core machine: oversubscription costs 3-16x)")
    p.add_argument("--word-tasks", default=",".join(WORD_TASKS))
    p.add_argument("--bitwise-tasks", default=",".join(BITWISE_TASKS))
    p.add_argument("--pool-size", type=int, default=256)
    p.add_argument("--heldout-frac", type=float, default=0.2)
    p.add_argument("--pairs", type=int, default=11, help="(input, output) pairs per training episode")
    p.add_argument("--word-batch", type=int, default=64)
    p.add_argument("--bitwise-batch", type=int, default=64)
    p.add_argument("--bitwise-frac", type=float, default=0.6667,
                   help="fraction of steps that train on a bitwise batch (interleaved evenly; word batches otherwise)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-prompts", type=int, default=200, help="held-out prompts per task and shot count (final card)")
    p.add_argument("--checkpoints", default=None,
                   help="comma-separated steps whose weights are kept in <out>/checkpoints (default: "
                        f"{','.join(map(str, DEFAULT_CHECKPOINTS))}; with --quick {','.join(map(str, QUICK_CHECKPOINTS))}; "
                        "'' for none); steps >= --steps are dropped")
    p.add_argument("--checkpoint-prompts", type=int, default=None,
                   help="held-out prompts per task and shot count for each checkpoint's logged accuracy (default 64, quick 16)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 300)
        args.eval_every = min(args.eval_every, 100)
        args.eval_prompts = min(args.eval_prompts, 50)
        args.warmup = min(args.warmup, 50)
    if args.checkpoints is None:
        args.checkpoints = ",".join(map(str, QUICK_CHECKPOINTS if args.quick else DEFAULT_CHECKPOINTS))
    args.checkpoint_steps = sorted({int(x) for x in args.checkpoints.split(",") if x.strip()})
    if any(c < 1 for c in args.checkpoint_steps):
        p.error("--checkpoints must be positive steps")
    args.checkpoint_steps = [c for c in args.checkpoint_steps if c < args.steps]
    if args.checkpoint_prompts is None:
        args.checkpoint_prompts = 16 if args.quick else 64
    return args


def _is_bitwise_step(step: int, frac: float) -> bool:
    """Interleave the families evenly: step ``s`` is bitwise when floor((s+1)*frac) > floor(s*frac)."""
    return math.floor((step + 1) * frac + 1e-9) > math.floor(step * frac + 1e-9)


def command_line(argv, module: str = "tlens_icl.models.embedded.train") -> str:
    """The training command without the output directory (which does not change the model)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--out":
            skip = True
            continue
        if a.startswith("--out=") or a == "--no-progress":
            continue
        keep.append(a)
    return " ".join([f"python -m {module}", *keep])


# --------------------------------------------------------------------------------------------
# episodes


class EpisodeSampler:
    """Single-family batches of training episodes as token-id tensors plus answer targets."""

    def __init__(self, tasks: list[TaskData], tok, n_pairs: int, seed: int):
        import torch

        self.torch = torch
        self.tasks = tasks
        self.n_pairs = n_pairs
        self.rng = random.Random(seed)
        self.bos, self.arrow, self.nl = tok.bos_token_id, tok.convert_tokens_to_ids("->"), tok.convert_tokens_to_ids("\n")
        vocab = tok.get_vocab()
        self.items = [[([vocab[w] for w in x.split()], vocab[y]) for x, y in t.train] for t in tasks]
        lens = {len(ids) for it in self.items for ids, _ in it}
        if len(lens) != 1:
            raise ValueError("all inputs of one family must have the same number of tokens")
        self.in_len = lens.pop()
        self.pair_len = self.in_len + 3  # x.. -> y \n
        self.seq_len = 1 + self.pair_len * n_pairs - 1
        # logits at the "->" of pair i predict y_i
        self.arrow_pos = torch.tensor([1 + i * self.pair_len + self.in_len for i in range(n_pairs)])

    def batch(self, size: int):
        torch = self.torch
        rows, task_ids = [], []
        for _ in range(size):
            ti = self.rng.randrange(len(self.tasks))
            pick = self.rng.sample(self.items[ti], self.n_pairs)
            row = [self.bos]
            for i, (x, y) in enumerate(pick):
                if i:
                    row.append(self.nl)
                row += [*x, self.arrow, y]
            rows.append(row)
            task_ids.append(ti)
        tokens = torch.tensor(rows, dtype=torch.long)
        targets = tokens[:, self.arrow_pos + 1]
        return tokens, targets, task_ids


# --------------------------------------------------------------------------------------------
# model


def make_config(d_vocab: int, seed: int, config: dict | None = None):
    """The bridge config of a new model (``config``: the architecture, default :data:`MODEL_CONFIG`)."""
    from transformer_lens import TransformerBridgeConfig

    kw = dict(MODEL_CONFIG if config is None else config)
    pos = kw.pop("positional_embedding_type")
    cfg = TransformerBridgeConfig(d_vocab=d_vocab, seed=seed, **kw)
    cfg.positional_embedding_type = pos  # not accepted by the constructor in TL 4.3
    return cfg


def config_from_dict(d: dict, init_weights: bool = False):
    from transformer_lens import TransformerBridgeConfig

    d = dict(d)
    pos = d.pop("positional_embedding_type", "standard")
    cfg = TransformerBridgeConfig(**d, init_weights=init_weights)
    cfg.positional_embedding_type = pos
    return cfg


def raw_to_bridge_state(raw: dict, d_vocab: int) -> dict:
    """Rename a raw ``NativeModel`` state dict to ``TransformerBridge.state_dict()`` names."""
    import re

    import torch

    out = {}
    for k, v in raw.items():
        k2 = k
        k2 = re.sub(r"^tok_embed\.", "embed.", k2)
        k2 = re.sub(r"^layers\.", "blocks.", k2)
        k2 = k2.replace(".mlp.fc_in.", ".mlp.in.").replace(".mlp.fc_out.", ".mlp.out.")
        k2 = re.sub(r"^ln_out\.", "ln_final.", k2)
        k2 = re.sub(r"^head\.", "unembed.", k2)
        out[k2] = v.detach().clone()
    out.setdefault("unembed.bias", torch.zeros(d_vocab))  # the bridge adds a zero unembed bias
    return out


def adamw(model, lr: float, weight_decay: float):
    """AdamW (betas 0.9, 0.98) with weight decay on the matrices only (not on biases and norm weights)."""
    import torch

    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))


def cosine_lr(step: int, lr: float, warmup: int, steps: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``lr`` down to 5 % of it at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    prog = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))


def raw_forward(model, tokens, positions=None):
    """Logits of the raw NativeModel, optionally only at ``positions`` (a 1-D index over seq)."""
    h = model.tok_embed(tokens)
    for block in model.layers:
        (h,) = block(h)
    if positions is not None:
        h = h[:, positions]
    return model.head(model.ln_out(h))


def _tokenize_prompts(tok, prompts):
    import torch

    texts = [_data.render_prompt(d, q) for d, q, _ in prompts]
    ids = tok(texts, add_special_tokens=True)["input_ids"]
    lens = {len(i) for i in ids}
    if len(lens) != 1:
        raise ValueError("prompts of one (task, shots) cell must have equal token length")
    vocab = tok.get_vocab()
    answers = torch.tensor([vocab[a] for _, _, a in prompts])
    return torch.tensor(ids), answers


def heldout_accuracy(forward, tok, tasks: list[TaskData], shots_list, n: int, seed: int = EVAL_SEED,
                     chunk: int = 256) -> dict[str, dict[int, float]]:
    """Exact-match (argmax at the last position == answer token) on held-out prompts."""
    import torch

    res: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for ti, task in enumerate(tasks):
            res[task.name] = {}
            for k in shots_list:
                prompts = _data.sample_prompts(task, n, k, seed=seed + 1000 * ti + k, heldout=True)
                toks, ans = _tokenize_prompts(tok, prompts)
                correct = 0
                for s in range(0, len(toks), chunk):
                    logits = forward(toks[s:s + chunk])[:, -1]
                    correct += int((logits.argmax(-1) == ans[s:s + chunk]).sum())
                res[task.name][k] = correct / len(toks)
    return res


def checkpoint_accuracy(bridge, tok, tasks: list[TaskData], n: int) -> dict[str, dict[int, float]]:
    """The accuracy logged for a checkpoint: held-out, 0 and 8 shots, through the bridge (as loaded)."""
    return heldout_accuracy(lambda toks: bridge(toks), tok, tasks, list(CHECKPOINT_SHOTS), n,
                            seed=EVAL_SEED + CHECKPOINT_SEED_OFFSET)


def save_checkpoint(out: Path, step: int, state: dict, bridge, tok, tasks: list[TaskData], n: int,
                    file: str | None = None) -> dict:
    """Write the float16 weights of ``step`` (unless ``file`` names weights already saved) and measure them."""
    import torch
    from safetensors.torch import save_file

    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if file is None:
        file = f"checkpoints/step_{step:06d}.safetensors"
        half = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
        save_file(half, str(out / file), metadata={"format": "pt", "dtype": "float16", "step": str(step)})
        os.chmod(out / file, 0o644)
        state = half
    bridge.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    acc = checkpoint_accuracy(bridge, tok, tasks, n)
    return {"step": step, "file": file, "accuracy": {k: {str(s): v for s, v in a.items()} for k, a in acc.items()},
            "accuracy_mean": summarize(acc, tasks)}


def summarize(acc: dict[str, dict[int, float]], tasks: list[TaskData]) -> dict:
    out = {}
    for fam in sorted({t.family for t in tasks}):
        names = [t.name for t in tasks if t.family == fam]
        shots = sorted(acc[names[0]])
        out[fam] = {str(k): round(sum(acc[n][k] for n in names) / len(names), 4) for k in shots}
    names = [t.name for t in tasks]
    out["all"] = {str(k): round(sum(acc[n][k] for n in names) / len(names), 4) for k in sorted(acc[names[0]])}
    return out


# --------------------------------------------------------------------------------------------


def train_model(out: str | os.PathLike, *, steps: int = 3600, checkpoints=DEFAULT_CHECKPOINTS,
                eval_prompts: int = 200, checkpoint_prompts: int = 64, eval_every: int = 500, seed: int = 0,
                threads: int = 1, word_tasks=WORD_TASKS, bitwise_tasks=BITWISE_TASKS, progress: bool = False,
                log: bool = False) -> Path:
    """Train an embedded ICL model (the ``icl-tiny`` recipe) into ``out`` and return ``out``.

    The same run as the command line (``python -m tlens_icl.models.embedded.train --out OUT ...``), which calls
    this: ``steps`` optimiser steps, float16 weights kept at each of ``checkpoints`` below ``steps`` (the final
    model is the last checkpoint), held-out accuracy on ``eval_prompts`` prompts per task and shot count for the
    card and ``checkpoint_prompts`` for each checkpoint; ``word_tasks`` and ``bitwise_tasks`` name the task
    library's tasks it learns. ``progress`` shows a tqdm bar and ``log`` prints the training log to stdout; both
    are off by default (the log is always written to ``<out>/train_log.jsonl``).
    Load the result with ``tlens_icl.load_model(str(out), step=...)``.
    """
    checkpoints = [int(c) for c in checkpoints]
    for name, value in (("steps", steps), ("eval_prompts", eval_prompts), ("checkpoint_prompts", checkpoint_prompts),
                        ("eval_every", eval_every), ("threads", threads)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if any(c < 1 for c in checkpoints):
        raise ValueError(f"checkpoints must be positive steps, got {checkpoints}.")
    argv = ["--out", str(out), "--steps", str(steps), "--checkpoints", ",".join(map(str, checkpoints)),
            "--eval-prompts", str(eval_prompts), "--checkpoint-prompts", str(checkpoint_prompts),
            "--eval-every", str(eval_every), "--seed", str(seed), "--threads", str(threads),
            "--word-tasks", ",".join(word_tasks), "--bitwise-tasks", ",".join(bitwise_tasks)]
    argv += [] if progress else ["--no-progress"]
    _train(_parse(argv), argv, log=log)
    return Path(out)


def main(argv=None) -> int:
    """The command line (module docstring): trains with its log on stdout."""
    _train(_parse(argv), argv, log=True)
    return 0


def _train(args: argparse.Namespace, argv, log: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm
    from transformer_lens import TransformerBridge
    from transformer_lens.model_bridge.sources.native import (
        NativeModel,
        initialize_native_model,
    )

    from tlens_icl.models.embedded._tokenizer import build_tokenizer, save_tokenizer

    def say(msg: str) -> None:
        if log:
            tqdm.write(msg, file=sys.stdout)  # above a running progress bar
            sys.stdout.flush()

    torch.set_num_threads(args.threads)
    out = args.out or (Path(__file__).resolve().parent / DEFAULT_NAME)
    out = Path(out)
    tasks_dir = Path(args.tasks_dir) if args.tasks_dir else _data.default_tasks_dir()
    word_names = [s for s in args.word_tasks.split(",") if s]
    bit_names = [s for s in args.bitwise_tasks.split(",") if s]
    t_start = time.time()

    # ---- data
    pool, word_tasks = _data.load_word_tasks(tasks_dir, word_names, args.pool_size, args.seed)
    held_pairs, bit_tasks = _data.load_bitwise_tasks(tasks_dir, bit_names, args.heldout_frac, args.seed)
    tasks = word_tasks + bit_tasks
    words = _data.vocabulary(tasks, extra=pool)
    tok = build_tokenizer(words, name_or_path=DEFAULT_NAME)
    d_vocab = len(tok.get_vocab())
    say(f"[train] tasks from {tasks_dir}: {len(word_tasks)} word tasks over a pool of {len(pool)} words, "
        f"{len(bit_tasks)} bitwise tasks ({len(held_pairs)} held-out operand pairs); vocabulary {d_vocab}")
    for t in tasks:
        say(f"[train]   {t.family:7s} {t.name:22s} train items {len(t.train):4d}  held-out items {len(t.heldout):4d}")

    # ---- model (raw NativeModel; same construction and init as boot_native)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    cfg = make_config(d_vocab, args.seed)
    model = NativeModel(cfg)
    with torch.random.fork_rng(devices=[]):
        initialize_native_model(model, cfg)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    say(f"[train] model: {n_params:,} parameters; {args.steps} steps; threads {args.threads}")

    opt = adamw(model, args.lr, args.weight_decay)

    def lr_at(step: int) -> float:
        return cosine_lr(step, args.lr, args.warmup, args.steps)

    samplers = {
        "word": EpisodeSampler(word_tasks, tok, args.pairs, seed=args.seed * 7919 + 1),
        "bitwise": EpisodeSampler(bit_tasks, tok, args.pairs, seed=args.seed * 7919 + 2),
    }
    if max(s.seq_len for s in samplers.values()) > cfg.n_ctx:
        raise ValueError("episodes do not fit in n_ctx")

    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    save_tokenizer(tok, tok_dir)
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg_dict = {k: getattr(cfg, k) for k in CONFIG_FIELDS}
    bridge = TransformerBridge.boot_native(config_from_dict(cfg_dict), tokenizer=tok2).eval()
    if (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")  # never mix checkpoints of two runs
    checkpoints: list[dict] = []
    log_path = out / "train_log.jsonl"
    log_f = open(log_path, "w", encoding="utf-8")

    def raw_eval_forward(toks):
        return raw_forward(model, toks)

    def log_eval(step: int, losses: dict, n_prompts: int):
        model.eval()
        acc = heldout_accuracy(raw_eval_forward, tok, tasks, [0, 8], n_prompts, seed=EVAL_SEED + 17)
        model.train()
        rec = {"step": step, "elapsed_s": round(time.time() - t_start, 1),
               "loss": {f: round(sum(v) / max(1, len(v)), 4) for f, v in losses.items()},
               "lr": lr_at(min(step, args.steps - 1)),
               "accuracy": {n: {str(k): round(v, 3) for k, v in a.items()} for n, a in acc.items()}}
        log_f.write(json.dumps(rec) + "\n")
        log_f.flush()
        summ = summarize(acc, tasks)
        msg = (f"[train] step {step:5d} loss word {rec['loss'].get('word', float('nan')):.3f} "
               f"bitwise {rec['loss'].get('bitwise', float('nan')):.3f} | acc 0-shot/8-shot "
               + " ".join(f"{f} {summ[f]['0']:.2f}/{summ[f]['8']:.2f}" for f in ("word", "bitwise"))
               + " | " + " ".join(f"{n}:{a[0]:.2f}/{a[8]:.2f}" for n, a in acc.items()))
        say(msg)

    # ---- training loop
    losses: dict[str, list[float]] = {"word": [], "bitwise": []}
    bar = tqdm(range(args.steps), desc="train icl-tiny", disable=args.no_progress, mininterval=2.0,
               file=sys.stdout)
    for step in bar:
        fam = "bitwise" if _is_bitwise_step(step, args.bitwise_frac) else "word"
        sampler = samplers[fam]
        tokens, targets, _ = sampler.batch(args.bitwise_batch if fam == "bitwise" else args.word_batch)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = raw_forward(model, tokens, sampler.arrow_pos)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses[fam].append(loss.item())
        if step % 20 == 0:
            bar.set_postfix({k: f"{sum(v[-20:]) / max(1, len(v[-20:])):.3f}" for k, v in losses.items() if v})
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            log_eval(step + 1, {k: v[-args.eval_every:] for k, v in losses.items()}, 64 if not args.quick else 32)
            losses = {"word": [], "bitwise": []}
        if step + 1 in args.checkpoint_steps:
            model.eval()
            with torch.no_grad():
                rec = save_checkpoint(out, step + 1, raw_to_bridge_state(model.state_dict(), d_vocab), bridge, tok2,
                                      tasks, args.checkpoint_prompts)
            model.train()
            checkpoints.append(rec)
            log_f.write(json.dumps({"checkpoint": rec["step"], "file": rec["file"], "accuracy": rec["accuracy"]}) + "\n")
            log_f.flush()
            say(f"[train] checkpoint step {rec['step']}: 0/8-shot " + " ".join(
                f"{f} {rec['accuracy_mean'][f]['0']:.2f}/{rec['accuracy_mean'][f]['8']:.2f}" for f in ("word", "bitwise")))
    bar.close()
    train_time = time.time() - t_start
    model.eval()

    # ---- bridge, fp32 vs fp16, card
    bridge.load_state_dict(raw_to_bridge_state(model.state_dict(), d_vocab), strict=True)
    with torch.no_grad():
        probe = samplers["bitwise"].batch(4)[0]
        max_diff = float((bridge(probe) - raw_forward(model, probe)).abs().max())
    say(f"[train] bridge vs raw model max |logit diff| {max_diff:.2e}")
    if max_diff > 1e-3:
        raise RuntimeError("the bridge does not reproduce the trained model")
    sd32 = {k: v.detach().clone().contiguous() for k, v in bridge.state_dict().items()}

    def bridge_forward(toks):
        return bridge(toks)

    acc32 = heldout_accuracy(bridge_forward, tok2, tasks, EVAL_SHOTS, args.eval_prompts)
    bridge.load_state_dict({k: v.half().float() for k, v in sd32.items()}, strict=True)
    acc16 = heldout_accuracy(bridge_forward, tok2, tasks, EVAL_SHOTS, args.eval_prompts)
    diffs = [abs(acc16[n][k] - acc32[n][k]) for n in acc32 for k in acc32[n]]
    mean32 = sum(v for a in acc32.values() for v in a.values()) / len(diffs)
    mean16 = sum(v for a in acc16.values() for v in a.values()) / len(diffs)
    use_fp16 = abs(mean16 - mean32) <= 0.002 and max(diffs) <= 0.02
    acc = acc16 if use_fp16 else acc32
    weights = {k: (v.half() if use_fp16 else v).contiguous() for k, v in sd32.items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt", "dtype": "float16" if use_fp16 else "float32"})
    os.chmod(out / "model.safetensors", 0o644)
    with open(out / "config.json", "w", encoding="utf-8") as f:
        json.dump(cfg_dict, f, indent=2)
    with torch.no_grad():
        checkpoints.append(save_checkpoint(out, args.steps, weights, bridge, tok2, tasks, args.checkpoint_prompts,
                                           file="model.safetensors"))
    index = {"steps": [c["step"] for c in checkpoints], "checkpoints": checkpoints,
             "accuracy_eval": {"shots": list(CHECKPOINT_SHOTS), "prompts_per_task_and_shots": args.checkpoint_prompts,
                               "seed": EVAL_SEED + CHECKPOINT_SEED_OFFSET, "heldout": True,
                               "function": "tlens_icl.models.embedded.train.checkpoint_accuracy"}}
    (out / "checkpoints").mkdir(exist_ok=True)
    with open(out / "checkpoints" / "index.json", "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)

    heldout = {
        "policy": {"bitwise": HELDOUT_POLICY["bitwise"].format(frac=args.heldout_frac, n=len(held_pairs),
                                                               total=len(bit_tasks[0].train) + len(held_pairs)),
                   "word": HELDOUT_POLICY["word"]},
        "word_pool": pool,
        "bitwise_heldout_inputs": held_pairs,
        "tasks": {t.name: {"family": t.family, "concept": t.concept,
                           "heldout_items": [{"input": x, "output": y, **({"alternatives": t.alternatives[x]} if x in t.alternatives else {})}
                                             for x, y in t.heldout]}
                  for t in tasks},
    }
    with open(out / "heldout.json", "w", encoding="utf-8") as f:
        json.dump(heldout, f, indent=1, ensure_ascii=False)

    import tokenizers
    import transformer_lens
    import transformers

    total_time = time.time() - t_start
    card = {
        "name": DEFAULT_NAME,
        "description": ("Tiny TransformerLens-native model (4 layers, d_model 128, rotary) trained from scratch to "
                        "learn tasks in context: the task is latent (the same query words occur under every word "
                        "task, the same operand pairs under every bitwise operator) and must be inferred from the "
                        "demonstrations. Word-level tokenizer; arrow template 'x -> y' one pair per line."),
        "default_template": "arrow",
        "prompt_format": "<bos>x1 -> y1\\nx2 -> y2\\n...\\nxq ->  (answer: ' yq', one token)",
        "families": {"word": [t.name for t in word_tasks], "bitwise": [t.name for t in bit_tasks]},
        "tasks": {t.name: {"family": t.family, "concept": t.concept, "library_items": t.n_library_items,
                           "train_items": len(t.train), "heldout_items": len(t.heldout)} for t in tasks},
        "heldout_policy": heldout["policy"],
        "heldout_file": "heldout.json",
        "checkpoint_steps": [c["step"] for c in checkpoints],
        "accuracy_heldout": {n: {str(k): round(v, 4) for k, v in a.items()} for n, a in acc.items()},
        "accuracy_heldout_mean": summarize(acc, tasks),
        "accuracy_eval": {"prompts_per_task_and_shots": args.eval_prompts, "metric": "argmax of the next-token "
                          "logits at the last prompt token == the answer token", "seed": EVAL_SEED},
        "weights_dtype": "float16" if use_fp16 else "float32",
        "fp16_check": {"mean_accuracy_fp32": round(mean32, 4), "mean_accuracy_fp16": round(mean16, 4),
                       "max_abs_cell_difference": round(max(diffs), 4)},
        "model_config": cfg_dict,
        "n_parameters": n_params,
        "training": {
            "command": command_line(argv),
            "seed": args.seed, "steps": args.steps, "threads": args.threads,
            "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.9, 0.98], "weight_decay": args.weight_decay,
                          "warmup_steps": args.warmup, "schedule": "linear warm-up then cosine to 5% of lr",
                          "grad_clip": 1.0},
            "episodes": {"pairs_per_episode": args.pairs, "loss": "cross-entropy on every answer token only",
                         "word_batch": args.word_batch, "bitwise_batch": args.bitwise_batch,
                         "bitwise_fraction_of_steps": args.bitwise_frac, "single_family_batches": True},
            "word_pool_size": len(pool), "bitwise_heldout_fraction": args.heldout_frac,
            "train_seconds": round(train_time, 1), "total_seconds": round(total_time, 1),
            "tasks_dir": str(tasks_dir.name),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformer_lens": getattr(transformer_lens, "__version__", "?"),
                         "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        },
    }
    with open(out / "card.json", "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2, ensure_ascii=False)
    log_f.write(json.dumps({"final": True, "accuracy_heldout_mean": card["accuracy_heldout_mean"],
                            "fp16_check": card["fp16_check"], "train_seconds": round(train_time, 1)}) + "\n")
    log_f.close()
    say(f"[train] fp32 mean acc {mean32:.4f}  fp16 mean acc {mean16:.4f}  -> saving {card['weights_dtype']}")
    for fam, v in card["accuracy_heldout_mean"].items():
        say(f"[train] held-out accuracy {fam:8s} " + "  ".join(f"{k}-shot {a:.3f}" for k, a in v.items()))
    for n, a in acc.items():
        say(f"[train]   {n:22s} " + "  ".join(f"{k}:{v:.3f}" for k, v in a.items()))
    say(f"[train] wrote {out} in {total_time / 60:.1f} min (training {train_time / 60:.1f} min)")


if __name__ == "__main__":
    raise SystemExit(main())

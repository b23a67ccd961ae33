#!/usr/bin/env python3
"""The Python baseline of tram's step benchmark.

SAM, ASAM, FSAM, TRAM-theta_{t-1} and TRAM-epsilon written in plain PyTorch the way a user would
(a loop over parameters, a backup copy, log_softmax composites for the
trust-region KL), on the same GPT-2-small architecture, batch and
hyper-parameters as bench/bench_step.cpp. Writes python_step.csv; with
--cpp-csv (bench_step's step.csv) also python_vs_cpp.csv with the ratio
Python / C++ per method (> 1: tram is faster).

The formulas are those of docs/ALGORITHMS.md: SAM e = rho g / ||g||; ASAM and TRAM
e = r T^2 g / ||T g|| with T = |w| + eta; FSAM e = r (g / f) / sqrt(sum(g^2 / f))
with f = 1 + eta_f g^2; TRAM-theta_{t-1}'s radius is
d = KL(p_{theta_{t-1}} || p_theta) on the batch (mean over valid rows), TRAM-epsilon's
d = KL(p_theta(emb + z) || p_theta(emb)) with z ~ N(0, sigma^2) on the token embeddings.
"""
import argparse
import csv
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------
# The model of bench/gpt2.h
# --------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, hidden, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_1 = nn.LayerNorm(hidden)
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.attn_proj = nn.Linear(hidden, hidden)
        self.ln_2 = nn.LayerNorm(hidden)
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.mlp_proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        b, t, c = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self.c_attn(self.ln_1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + F.dropout(self.attn_proj(a.transpose(1, 2).reshape(b, t, c)), p, self.training)
        return x + F.dropout(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")), p, self.training)


class GPT2(nn.Module):
    def __init__(self, vocab, positions, hidden, layers, heads, dropout):
        super().__init__()
        self.dropout = dropout
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(positions, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "ln_" in name:
                    continue
                p.zero_() if "bias" in name else p.normal_(0.0, 0.02)

    def forward(self, ids, noise_sigma=0.0):
        tokens = self.wte(ids)
        if noise_sigma:  # TRAM-epsilon's target: noise on the token embeddings
            tokens = tokens + noise_sigma * torch.randn_like(tokens)
        x = tokens + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


# --------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------
def kl_rows_mean(target_logits, current_logits, mask):
    """KL(softmax(target) || softmax(current)) per row, mean over valid rows."""
    log_t = torch.log_softmax(target_logits.float(), -1)
    log_c = torch.log_softmax(current_logits.float(), -1)
    rows = (log_t.exp() * (log_t - log_c)).sum(-1)
    return (rows * mask).sum() / mask.sum().clamp_min(1)


class SharpnessAware:
    """SAM (adaptive=False) and ASAM (adaptive=True) around a base optimizer;
    FSAM with fisher_eta set."""

    def __init__(self, params, base, rho, adaptive, eta=0.01, fisher_eta=None):
        self.params = [p for p in params if p.requires_grad]
        self.base, self.rho, self.adaptive, self.eta = base, rho, adaptive, eta
        self.fisher_eta = fisher_eta
        self.backup = {}

    def _scale(self, p):
        return p.abs() + self.eta

    @torch.no_grad()
    def first_step(self, radius=None):
        params = [p for p in self.params if p.grad is not None]
        if self.fisher_eta is not None:
            fisher = [1 + self.fisher_eta * p.grad * p.grad for p in params]
            norm = torch.stack([(p.grad * p.grad / f).sum() for p, f in zip(params, fisher)]).sum().add(1e-12).sqrt()
            coef = (self.rho if radius is None else radius) / norm
            for p, f in zip(params, fisher):
                if p not in self.backup:
                    self.backup[p] = torch.empty_like(p)
                self.backup[p].copy_(p)
                p.add_(p.grad / f * coef)
            return
        if self.adaptive:
            norm = torch.norm(torch.stack([(self._scale(p) * p.grad).norm(2) for p in params]), 2)
        else:
            norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
        coef = (self.rho if radius is None else radius) / (norm + 1e-12)
        for p in params:
            if p not in self.backup:
                self.backup[p] = torch.empty_like(p)
            self.backup[p].copy_(p)
            e = self._scale(p).pow(2) * p.grad if self.adaptive else p.grad
            p.add_(e * coef)

    @torch.no_grad()
    def second_step(self):
        for p, saved in self.backup.items():
            p.copy_(saved)
        self.base.step()


def make_step(method, model, ids, labels, mask, base_args):
    params = list(model.parameters())
    base = torch.optim.Adam(params, **base_args)

    def loss_of(logits):
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels, ignore_index=-100)

    if method == "adam":
        def step():
            base.zero_grad(set_to_none=True)
            loss_of(model(ids)).backward()
            base.step()
        return step

    if method in ("sam", "asam", "fsam"):
        if method == "fsam":
            sam = SharpnessAware(params, base, rho=0.1, adaptive=False, fisher_eta=0.1)
        else:
            sam = SharpnessAware(params, base, rho=0.05 if method == "sam" else 0.5, adaptive=method == "asam")

        def step():
            base.zero_grad(set_to_none=True)
            loss_of(model(ids)).backward()
            sam.first_step()
            base.zero_grad(set_to_none=True)
            loss_of(model(ids)).backward()
            sam.second_step()
        return step

    if method == "tram-noise":
        sam = SharpnessAware(params, base, rho=0.5, adaptive=True)

        def step():
            # Target: the current model on noised token embeddings, eval mode, no grad.
            with torch.no_grad():
                model.eval()
                target_logits = model(ids, noise_sigma=1e-2)
                model.train()
            base.zero_grad(set_to_none=True)
            logits = model(ids)
            loss_of(logits).backward()
            with torch.no_grad():
                radius = kl_rows_mean(target_logits, logits.detach(), mask).item()
            sam.first_step(radius)
            base.zero_grad(set_to_none=True)
            loss_of(model(ids)).backward()
            sam.second_step()
        return step

    if method == "tram-prev":
        sam = SharpnessAware(params, base, rho=0.5, adaptive=True)
        previous = [p.detach().clone() for p in params]  # theta_{t-1}; theta_0 at the first step

        def step():
            # Target: the model at theta_{t-1}, eval mode, no grad.
            with torch.no_grad():
                current = [p.detach().clone() for p in params]
                for p, prev in zip(params, previous):
                    p.copy_(prev)
                model.eval()
                target_logits = model(ids)
                model.train()
                for p, cur in zip(params, current):
                    p.copy_(cur)
            base.zero_grad(set_to_none=True)
            logits = model(ids)
            loss_of(logits).backward()
            with torch.no_grad():
                radius = kl_rows_mean(target_logits, logits.detach(), mask).item()
                for p, prev in zip(params, previous):
                    prev.copy_(p)  # theta_t: next step's theta_{t-1}
            sam.first_step(radius)
            base.zero_grad(set_to_none=True)
            loss_of(model(ids)).backward()
            sam.second_step()
        return step

    raise ValueError(f"unknown method {method}")


def time_steps(step, device, warmup, iters):
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            times.append((start, end))
        torch.cuda.synchronize(device)
        return statistics.median(s.elapsed_time(e) for s, e in times)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--tf32", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--methods", default="adam,sam,asam,fsam,tram-prev,tram-noise")
    parser.add_argument("--small", action="store_true", help="2 layers, hidden 64, vocab 1000, batch 2 x 32")
    parser.add_argument("--cpp-csv", default="", help="bench_step's step.csv, for the Python / C++ ratio")
    args = parser.parse_args()
    if args.small:
        args.layers, args.hidden, args.heads, args.vocab, args.batch, args.seq = 2, 64, 4, 1000, 2, 32

    device = torch.device(args.device)
    if device.type == "cuda" and args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    model = GPT2(args.vocab, max(args.seq, 32 if args.small else 1024), args.hidden, args.layers, args.heads,
                 args.dropout).to(device=device, dtype=dtype)
    model.train()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    labels = torch.cat([ids[:, 1:], torch.full((args.batch, 1), -100, device=device)], 1).reshape(-1)
    mask = torch.ones(args.batch, args.seq, device=device)
    mask[:, -1] = 0
    base_args = dict(lr=2e-5, betas=(0.9, 0.99))
    print(f"PyTorch {torch.__version__}: GPT-2 architecture, {args.layers} layers, hidden {args.hidden}, "
          f"vocab {args.vocab}, {sum(p.numel() for p in model.parameters())} parameters, {args.dtype}; "
          f"batch {args.batch} x {args.seq} on {device}")

    rows = []
    for method in [m for m in args.methods.split(",") if m]:
        print(f"{method}...", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        step = make_step(method, model, ids, labels, mask, base_args)
        try:
            ms = time_steps(step, device, args.warmup, args.iters)
        except torch.cuda.OutOfMemoryError:
            print(f"{method}: out of memory at this batch")
            rows.append({"method": method, "step_ms": "OOM", "peak_GiB": ""})
            del step
            model.zero_grad(set_to_none=True)
            continue
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rows.append({"method": method, "step_ms": f"{ms:.2f}", "peak_GiB": "" if math.isnan(peak) else f"{peak:.2f}"})
        del step
        model.zero_grad(set_to_none=True)

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "python_step.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "step_ms", "peak_GiB"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{'method':<12} {'python_ms':>10} {'peak_GiB':>9}")
    for r in rows:
        print(f"{r['method']:<12} {r['step_ms']:>10} {r['peak_GiB']:>9}")
    print(f"wrote {path}")

    if args.cpp_csv:
        with open(args.cpp_csv) as f:
            cpp = {r["method"]: r for r in csv.DictReader(f)}
        compared = []
        for r in rows:
            c = cpp.get(r["method"])
            try:
                ratio = float(r["step_ms"]) / float(c["step_ms"])
            except (TypeError, ValueError):  # no C++ row, or OOM on either side
                continue
            compared.append({"method": r["method"], "python_ms": r["step_ms"], "cpp_ms": c["step_ms"],
                             "python_over_cpp": f"{ratio:.3f}", "python_peak_GiB": r["peak_GiB"],
                             "cpp_peak_GiB": c.get("peak_GiB", "")})
        path = os.path.join(args.out, "python_vs_cpp.csv")
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(compared[0].keys()) if compared else ["method"])
            writer.writeheader()
            writer.writerows(compared)
        print(f"\n{'method':<12} {'python_ms':>10} {'cpp_ms':>10} {'python/cpp':>11}")
        for r in compared:
            print(f"{r['method']:<12} {r['python_ms']:>10} {r['cpp_ms']:>10} {r['python_over_cpp']:>11}")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Independent Python reference of the tram optimizers, for differential testing.

Reads a tram-trace case (docs/TRACE.md) and writes the trace tram-trace would
write, computed straight from the formulas of docs/ALGORITHMS.md with plain
tensor operations: no code is shared with the C++ library. The base optimizers
are torch.optim's SGD, Adam and AdamW (LibTorch's follow the same update
rules).

Methods:
  plain bases          sgd, adam, adamw
  §1-3                 sam, asam, fsam
  §2-6 (TRAM)          tram-prev, tram-pre, tram-noise, tram-fisher
  §7                   trpo, r3f, mesa, and <ascent>+<regularizer> ("asam+trpo")
  SAM variants         gsam (GSAM, Zhuang et al. 2022), looksam (LookSAM, Liu et
                       al. 2022), esam (ESAM, Du et al. 2022), friendly-sam (F-SAM,
                       Li et al. 2024), vasso (VaSSO, Li et al. 2023), wsam (WSAM,
                       Yue et al. 2023): §16
(sections of docs/ALGORITHMS.md)

The computation is always in float64. A float32 case starts from the same
float32-rounded weights and inputs as tram-trace, then runs in float64: its
trace is the exact-arithmetic answer that tram-trace's float32 run
approximates (compare.py states the tolerance).

The noise z a method adds to the inputs is the batch's "noise", as given (the
case fixes it so that runs are deterministic); the noise's sigma and
distribution are therefore not used here (F-SAM's own sigma is).

ESAM's random choice of tensors is the counter-based hash esam_uniform() of
(seed, step, tensor), which tram-trace computes the same way, so that it too
is fixed by the case.

Usage: reference.py CASE.json [-o TRACE.json]
"""

import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

BASES = ("sgd", "adam", "adamw")
# The SAM variants: each ascends along a vector v of its own with SAM's (or
# ASAM's) formula and steps the base with a descent gradient of its own.
SAM_VARIANTS = ("gsam", "looksam", "esam", "friendly-sam", "vasso", "wsam")
ASCENTS = ("sam", "asam", "fsam", "tram-prev", "tram-pre", "tram-ema", "tram-noise",
           "tram-fisher") + SAM_VARIANTS
REGULARIZERS = ("trpo", "r3f", "mesa")

# Defaults (docs/ALGORITHMS.md §10; the factory's when an option is not
# given). Options that only shape the random noise are accepted and unused
# (see above).
NOISE_KEYS = {"sigma": 1e-2, "noise": "normal"}
TRUST_REGION_KEYS = {"divergence": "forward", "kernel": "imq2", "reduction": "mean", "scale": 1.0,
                     "max_radius": None}
# formula: "paper" or "released" (the released code's ascent, never times g);
# adaptive: T = |w| + eta (true) or T = 1 (false, SAM's direction).
TRAM_ASCENT_KEYS = {"formula": "paper", "adaptive": True}
# The SAM variants' ascent: SAM's (adaptive = false) or ASAM's (true), radius rho.
SAM_ASCENT_KEYS = {"rho": 0.05, "adaptive": False, "eta": 0.01}
METHOD_DEFAULTS = {
    "sam": {"rho": 0.05},
    "asam": {"rho": 0.5, "eta": 0.01},
    "fsam": {"gamma": 0.1, "fisher_eta": 0.1},
    "tram-prev": {"eta": 0.01, **TRAM_ASCENT_KEYS, **TRUST_REGION_KEYS},
    "tram-pre": {"eta": 0.01, **TRAM_ASCENT_KEYS, **TRUST_REGION_KEYS},
    "tram-ema": {"eta": 0.01, "target_decay": 0.99, **TRAM_ASCENT_KEYS, **TRUST_REGION_KEYS},
    "tram-noise": {"eta": 0.01, **TRAM_ASCENT_KEYS, **TRUST_REGION_KEYS, **NOISE_KEYS},
    "tram-fisher": {"gamma": 0.1, "fisher_eta": 0.1, "radius": "fixed", **TRUST_REGION_KEYS, **NOISE_KEYS},
    "trpo": {"lambda": 0.1},
    "r3f": {"lambda": 0.1, "reg_sigma": 1e-5, "reg_noise": "uniform"},
    "mesa": {"lambda": 0.1, "ema_decay": 0.999, "temperature": 1.0},
    "gsam": {**SAM_ASCENT_KEYS, "alpha": 0.4},
    # LookSAM has no interval: k plays its role (Method drops the key).
    "looksam": {**SAM_ASCENT_KEYS, "k": 5, "alpha": 0.7},
    "esam": {**SAM_ASCENT_KEYS, "beta": 0.5, "gamma": 0.5, "seed": 0},
    "friendly-sam": {**SAM_ASCENT_KEYS, "sigma": 1.0, "friendly_lambda": 0.9},
    "vasso": {**SAM_ASCENT_KEYS, "theta": 0.9},
    # WSAM's gamma is its weight, not a radius: the radius stays rho.
    "wsam": {**SAM_ASCENT_KEYS, "gamma": 0.9, "decouple": True},
}
# The target logits each TRAM variant compares with (docs/ALGORITHMS.md §4).
TARGET_OF = {"tram-prev": "previous", "tram-pre": "pretrained", "tram-ema": "history", "tram-noise": "noise"}
STRING_OPTIONS = {"divergence", "kernel", "reduction", "formula", "radius", "noise", "reg_noise"}
BOOL_OPTIONS = {"adaptive", "decouple"}
INTEGER_OPTIONS = {"seed"}


class CaseError(Exception):
    pass


def parse_bool(key, value):
    """A boolean option: JSON true/false, 0/1, or the strings "true"/"false"/"1"/"0"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise CaseError(f"options.{key} must be a boolean (true or false), got {value!r}")


def parse_integer(key, value):
    """An unsigned 64-bit integer option (ESAM's seed): a JSON integer, or a float with an integral value."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 64:
        raise CaseError(f"options.{key} must be an integer in [0, 2^64), got {value!r}")
    return value


def dtype_of(name):
    if name == "float64":
        return torch.float64
    if name == "float32":
        return torch.float32
    raise CaseError(f"'dtype' must be float32 or float64, got {name!r}")


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------

class MLP:
    """Linear layers at even indices of a torch::nn::Sequential, the activation
    between them, none after the last one (names "0.weight", "0.bias", ...)."""

    def __init__(self, case, case_dtype):
        layers = case["layers"]
        if len(layers) < 2:
            raise CaseError("'layers' needs at least [inputs, outputs]")
        self.activation = {"tanh": torch.tanh, "relu": torch.relu}[case["activation"]]
        self.names = []
        self.params = []
        for i in range(len(layers) - 1):
            for kind, shape in (("weight", (layers[i + 1], layers[i])), ("bias", (layers[i + 1],))):
                name = f"{2 * i}.{kind}"
                # Round to the case's dtype first (what tram-trace holds), then
                # compute in float64.
                value = torch.tensor(case["params"][name], dtype=case_dtype).to(torch.float64)
                if tuple(value.shape) != shape:
                    raise CaseError(f"params.{name} has shape {tuple(value.shape)}, expected {shape}")
                self.names.append(name)
                self.params.append(value.requires_grad_(True))
        unknown = set(case["params"]) - set(self.names)
        if unknown:
            raise CaseError(f"'params' has unknown names {sorted(unknown)}")

    def logits(self, x, params=None):
        """The logits at the model's parameters, or at another parameter set."""
        params = self.params if params is None else params
        h = x
        n_linear = len(params) // 2
        for i in range(n_linear):
            h = F.linear(h, params[2 * i], params[2 * i + 1])
            if i + 1 < n_linear:
                h = self.activation(h)
        return h

    def snapshot(self):
        return [p.detach().clone() for p in self.params]


def make_base(base, params):
    name = base["name"]
    lr = base.get("lr")
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=0.01 if lr is None else lr,
            momentum=base.get("momentum", 0.0),
            dampening=base.get("dampening", 0.0),
            weight_decay=base.get("weight_decay", 0.0),
            nesterov=bool(base.get("nesterov", False)),
            foreach=False,
        )
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        # LibTorch's AdamW defaults to weight_decay 1e-2, like torch.optim.AdamW.
        default_wd = 0.0 if name == "adam" else 1e-2
        return cls(
            params,
            lr=1e-3 if lr is None else lr,
            betas=tuple(base.get("betas", (0.9, 0.999))),
            eps=base.get("eps", 1e-8),
            weight_decay=base.get("weight_decay", default_wd),
            amsgrad=bool(base.get("amsgrad", False)),
            foreach=False,
        )
    raise CaseError(f"base.name must be one of {BASES}, got {name!r}")


# ---------------------------------------------------------------------------
# The method: names and options
# ---------------------------------------------------------------------------

class Method:
    def __init__(self, name, options):
        head, _, tail = name.partition("+")
        valid = ((head in BASES or head in REGULARIZERS) and not tail) or (
            head in ASCENTS and (not tail or tail in REGULARIZERS))
        if not valid:
            raise CaseError(f"the reference has no method {name!r}")
        self.name = name
        self.plain = head in BASES
        self.ascent = head if head in ASCENTS else None
        self.regularizer = head if head in REGULARIZERS else (tail or None)
        defaults = {"eps_norm": 1e-12, "interval": 1} if self.ascent else {}
        if self.ascent == "looksam":
            del defaults["interval"]  # k sets which steps ascend
        for part in (self.ascent, self.regularizer):
            if part:
                defaults.update(METHOD_DEFAULTS[part])
        self.options = dict(defaults)
        for key, value in options.items():
            if key not in defaults:
                raise CaseError(f"options.{key} is not an option of {name} in the reference "
                                f"(known: {sorted(defaults)})")
            if key in STRING_OPTIONS:
                self.options[key] = value
            elif key in BOOL_OPTIONS:
                self.options[key] = parse_bool(key, value)
            elif key in INTEGER_OPTIONS:
                self.options[key] = parse_integer(key, value)
            else:
                self.options[key] = float(value)
        self.check_ranges()

    def check_ranges(self):
        """The SAM variants' options outside the range where their formula is defined."""
        o = self.options
        if self.ascent == "looksam" and not (o["k"] >= 1 and float(o["k"]).is_integer()):
            raise CaseError(f"options.k must be an integer >= 1, got {o['k']!r}")
        if self.ascent == "esam":
            # beta divides the radius; gamma * B rows must be at least one and at most B.
            for key in ("beta", "gamma"):
                if not 0 < o[key] <= 1:
                    raise CaseError(f"options.{key} must be in (0, 1] for esam, got {o[key]!r}")
        if self.ascent == "wsam" and o["gamma"] == 1:
            raise CaseError("options.gamma must not be 1 for wsam (its weight is gamma / (1 - gamma))")

    def __getitem__(self, key):
        return self.options[key]

    @property
    def target(self):
        """Where the trust-region distance d comes from, or None for a fixed radius."""
        if self.ascent in ("tram-prev", "tram-pre", "tram-ema", "tram-noise"):
            return self.ascent
        if self.ascent == "tram-fisher" and self["radius"] == "trust_region":
            return "tram-fisher"
        return None


# ---------------------------------------------------------------------------
# The trust-region divergence (docs/ALGORITHMS.md §5)
# ---------------------------------------------------------------------------

def kl_rows(logits_p, logits_q):
    """KL(softmax(p) || softmax(q)) per row, with log-softmax."""
    log_p = F.log_softmax(logits_p, dim=-1)
    log_q = F.log_softmax(logits_q, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


MMD_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def mmd_kernel(s, kernel):
    """The kernel of the squared distances s, summed over the bandwidths."""
    forms = {"imq2": lambda b: (b * b + s) ** -0.5, "imq": lambda b: b / (b + s),
             "imq3": lambda b: b * b / (b * b + s), "rbf": lambda b: torch.exp(-s / (2 * b))}
    if kernel not in forms:
        raise CaseError(f"options.kernel must be one of {sorted(forms)}, got {kernel!r}")
    return sum(forms[kernel](b) for b in MMD_BANDWIDTHS)


def divergence(target_logits, current_logits, kind="forward", reduction="mean", kernel="imq2"):
    """D(p_target || p_current), summed over classes, reduced over rows; or the
    L2 / MMD distances of the logits (docs/ALGORITHMS.md §5)."""
    batch = current_logits.shape[0]
    if kind == "l2":
        norms = (current_logits - target_logits).norm(dim=-1)
        if reduction == "sum":
            return norms.sum()
        return norms.mean() / (batch if reduction == "legacy" else 1)
    if kind == "mmd":
        x, y = target_logits, current_logits

        def k(a, b):
            return mmd_kernel(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), kernel).mean()
        mmd = k(x, x) + k(y, y) - 2 * k(x, y)
        return mmd / (batch if reduction == "legacy" else 1)
    if kind == "forward":
        rows = kl_rows(target_logits, current_logits)
    elif kind == "reverse":
        rows = kl_rows(current_logits, target_logits)
    elif kind == "symmetric":
        rows = kl_rows(target_logits, current_logits) + kl_rows(current_logits, target_logits)
    else:
        raise CaseError(f"options.divergence must be forward, reverse, symmetric, l2 or mmd, got {kind!r}")
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    if reduction == "legacy":
        # The released code: F.kl_div(reduction="mean") (/ rows x classes), then / batch size.
        return rows.sum() / current_logits.numel() / current_logits.shape[0]
    raise CaseError(f"options.reduction must be mean, sum or legacy, got {reduction!r}")


# ---------------------------------------------------------------------------
# The perturbation (docs/ALGORITHMS.md §2 and §6)
# ---------------------------------------------------------------------------

def perturbation(method, radius, params, grads):
    """Returns (e per parameter, ascent norm, skipped)."""
    eps = method["eps_norm"]
    kind = method.ascent
    released = method.options.get("formula") == "released"
    adaptive = method.options.get("adaptive", True)
    if kind == "sam":
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        if not math.isfinite(norm):
            return None, norm, True
        return [radius * g / (norm + eps) for g in grads], norm, False
    if kind in ("asam", "tram-prev", "tram-pre", "tram-ema", "tram-noise"):
        # T = |w| + eta, or T = 1 (SAM's direction) with adaptive = false.
        scales = [w.detach().abs() + method["eta"] if adaptive else torch.ones_like(w.detach())
                  for w in params]
        norm = math.sqrt(sum(float(((t * g) ** 2).sum()) for t, g in zip(scales, grads)))
        if not math.isfinite(norm):
            return None, norm, True
        if released:
            # The released TRAM code: e = r T^2 / (||T g|| + eps), never times g
            # (adaptive = false: e = r / (||g|| + eps) per element).
            return [radius * t * t / (norm + eps) for t in scales], norm, False
        return [radius * t * t * g / (norm + eps) for t, g in zip(scales, grads)], norm, False
    if kind in ("fsam", "tram-fisher"):
        fishers = [1.0 + method["fisher_eta"] * g * g for g in grads]
        squared = sum(float((g * g / f).sum()) for g, f in zip(grads, fishers))
        norm = math.sqrt(squared) if squared >= 0 else float("nan")
        if not math.isfinite(squared):
            return None, norm, True
        denom = math.sqrt(squared + eps)
        return [radius * (g / f) / denom for g, f in zip(grads, fishers)], norm, False
    raise CaseError(f"method {method.name!r} has no ascent")


# ---------------------------------------------------------------------------
# The SAM variants: gsam, looksam, esam, friendly-sam, vasso, wsam
# ---------------------------------------------------------------------------
#
# g is the gradient of pass 1 at w, g_p that of pass 2 at w + e (each of the
# method's loss, regularizer included). Norms and dot products are global:
# one number over every element of every parameter. Each variant ascends
# along a vector v of its own (ascent_vector) with SAM's formula, or ASAM's
# with adaptive = true (sam_ascent), and steps the base with a descent
# gradient of its own (descent). State kept across steps (F-SAM's m, VaSSO's
# d, LookSAM's g_v) changes only on steps whose ascent ran (not skipped).

def dot(a, b):
    """<a, b> over all parameters."""
    return sum(float((x * y).sum()) for x, y in zip(a, b))


def global_norm(a):
    return math.sqrt(dot(a, a))


MASK64 = (1 << 64) - 1


def esam_uniform(seed, step, index):
    """ESAM's draw for parameter tensor `index` (0-based, the model's order) at
    step `step`: a counter-based hash (splitmix64's finalizer) of the three,
    in [0, 1). Python's ints are unbounded, so every product is reduced mod
    2^64 by hand."""
    x = (seed * 0x9E3779B97F4A7C15 + (step + 1) * 0xBF58476D1CE4E5B9
         + (index + 1) * 0x94D049BB133111EB) & MASK64
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z = z ^ (z >> 31)
    return (z >> 11) * 2.0 ** -53  # the top 53 bits: exact in a double


def ascent_vector(method, state, step, grads):
    """The vector v a SAM variant ascends along, the tensors it covers (None:
    all), and the state to keep if the ascent is not skipped.

      gsam, looksam, wsam  v = g
      esam (SWP)           v = g on the tensors i with esam_uniform(seed, t, i) < beta;
                           the others are neither perturbed nor counted in the norm
      friendly-sam         first ascent: v = g, then m = g; later ones:
                           v = g - sigma m, then m <- lambda m + (1 - lambda) g
      vasso                first ascent: d = g; later ones: d <- (1 - theta) d + theta g;
                           v = the new d
    """
    kind = method.ascent
    if kind == "esam":
        selected = [esam_uniform(method["seed"], step, i) < method["beta"] for i in range(len(grads))]
        return grads, selected, {}
    if kind == "friendly-sam":
        m = state.get("m")
        if m is None:
            return grads, None, {"m": grads}
        sigma, lam = method["sigma"], method["friendly_lambda"]
        v = [g - sigma * mi for g, mi in zip(grads, m)]
        return v, None, {"m": [lam * mi + (1.0 - lam) * g for mi, g in zip(m, grads)]}
    if kind == "vasso":
        d = state.get("vasso_d")
        theta = method["theta"]
        new = grads if d is None else [(1.0 - theta) * di + theta * g for di, g in zip(d, grads)]
        return new, None, {"vasso_d": new}
    return grads, None, {}


def sam_ascent(method, radius, params, vectors, selected=None):
    """Returns (e per parameter, ascent norm, skipped) for SAM's ascent along v:

      adaptive = false  e = r v / (||v|| + eps),          ascent norm ||v||
      adaptive = true   e = r T^2 v / (||T v|| + eps),    ascent norm ||T v||, T = |w| + eta

    over the selected tensors only (e = 0 on the others). No tensor selected:
    e = 0 and norm 0, which is not a skip."""
    eps = method["eps_norm"]
    chosen = [True] * len(vectors) if selected is None else selected
    scales = [w.detach().abs() + method["eta"] for w in params] if method["adaptive"] else None
    if scales is None:
        norm = math.sqrt(sum(float((v * v).sum()) for v, c in zip(vectors, chosen) if c))
    else:
        norm = math.sqrt(sum(float(((t * v) ** 2).sum()) for t, v, c in zip(scales, vectors, chosen) if c))
    if not math.isfinite(norm):
        return None, norm, True
    e = []
    for i, (v, c) in enumerate(zip(vectors, chosen)):
        if not c:
            e.append(torch.zeros_like(v))
        elif scales is None:
            e.append(radius * v / (norm + eps))
        else:
            e.append(radius * scales[i] * scales[i] * v / (norm + eps))
    return e, norm, False


def esam_rows(method, before, after):
    """ESAM's SDS: the ceil(gamma B) rows whose loss rose most from w to w + e
    (after - before, per row), in ascending row order. sorted() is stable, so
    equal rises keep the lower row first (topk would not promise that)."""
    rise = (after - before).tolist()
    count = math.ceil(method["gamma"] * len(rise))
    order = sorted(range(len(rise)), key=lambda i: rise[i], reverse=True)
    return sorted(order[:count])


def descent(method, state, g, g_p):
    """The gradient a SAM variant's base steps with after an ascent that ran,
    and what is then subtracted from w times the base's learning rate (None:
    nothing).

      gsam     g_p - alpha g_perp, g_perp = g - <g, u> u, u = g_p / (||g_p|| + eps):
               the part of g orthogonal to g_p
      looksam  g_p; keeps g_v = g_p - (<g, g_p> / (||g||^2 + eps)) g for the steps between
      wsam     a = gamma / (1 - gamma); decouple = false: a g_p + (1 - a) g;
               decouple = true: g, then w <- w - lr a (g_p - g) after the base step
      others   g_p
    """
    kind = method.ascent
    eps = method["eps_norm"]
    if kind == "gsam":
        norm_p = global_norm(g_p)
        u = [gp / (norm_p + eps) for gp in g_p]
        along = dot(g, u)
        perp = [gi - along * ui for gi, ui in zip(g, u)]
        return [gp - method["alpha"] * pi for gp, pi in zip(g_p, perp)], None
    if kind == "looksam":
        along = dot(g, g_p) / (dot(g, g) + eps)
        state["g_v"] = [gp - along * gi for gp, gi in zip(g_p, g)]
        return g_p, None
    if kind == "wsam":
        a = method["gamma"] / (1.0 - method["gamma"])
        if method["decouple"]:
            return g, [a * (gp - gi) for gp, gi in zip(g_p, g)]
        return [a * gp + (1.0 - a) * gi for gp, gi in zip(g_p, g)], None
    return g_p, None


def looksam_reuse(method, state, g):
    """LookSAM between its ascents (t mod k != 0): one pass, and the descent
    gradient g + alpha (||g|| / (||g_v|| + eps)) g_v, with the g_v of the last
    ascent; g itself while there is none (the first ascent was skipped)."""
    g_v = state.get("g_v")
    if g_v is None:
        return g
    weight = method["alpha"] * (global_norm(g) / (global_norm(g_v) + method["eps_norm"]))
    return [gi + weight * vi for gi, vi in zip(g, g_v)]


# ---------------------------------------------------------------------------
# The step (docs/ALGORITHMS.md §1) and the run
# ---------------------------------------------------------------------------

def run(case):
    torch.set_num_threads(1)
    method = Method(case["method"], case.get("options", {}))
    base = dict(case.get("base", {"name": method.name if method.plain else "sgd"}))
    if method.plain and base["name"] != method.name:
        raise CaseError(f"method {method.name!r} is a plain base but base.name is {base['name']!r}")
    case_dtype = dtype_of(case["dtype"])
    model = MLP(case, case_dtype)
    base_opt = make_base(base, model.params)

    batches = []
    for batch in case["batches"]:
        x = torch.tensor(batch["x"], dtype=case_dtype).to(torch.float64)
        y = torch.tensor(batch["y"], dtype=torch.int64)
        z = torch.tensor(batch["noise"], dtype=case_dtype).to(torch.float64) if "noise" in batch else None
        batches.append((x, y, z))
    if not batches:
        raise CaseError("'batches' is empty")

    reg = method.regularizer
    # Parameter sets the targets are computed at: θ_{t-1} (θ_{-1} = θ_0), θ_0,
    # and MESA's EMA teacher (starting at θ_0).
    previous = model.snapshot() if method.target == "tram-prev" or reg == "trpo" else None
    pretrained = model.snapshot() if method.target == "tram-pre" else None
    history = model.snapshot() if method.target == "tram-ema" else None  # θ̄, starting at θ_0
    ema = model.snapshot() if reg == "mesa" else None
    state = {}  # the SAM variants' state across steps (F-SAM's m, VaSSO's d, LookSAM's g_v)

    def noised(x, z, batch_index):
        if z is None:
            raise CaseError(f"batches[{batch_index}].noise is missing; {method.name} adds noise to its inputs")
        return x + z

    def regularizer(logits, x_noisy, targets, rows=None):
        """R of one pass (docs/ALGORITHMS.md §7), with gradient through `logits`;
        over the given rows of the batch only (ESAM's pass 2), or all of them."""
        def pick(t):
            return t if rows is None else t[rows]
        if reg == "trpo":
            return divergence(pick(targets["previous"]), logits)
        if reg == "r3f":
            noisy_logits = model.logits(pick(x_noisy()))
            return divergence(logits, noisy_logits, "symmetric")
        if reg == "mesa":
            tau = method["temperature"]
            return tau * tau * divergence(pick(targets["ema"]) / tau, logits / tau)
        return None

    def backward(loss):
        for p in model.params:
            p.grad = None
        loss.backward()
        return [p.grad.detach().clone() for p in model.params]

    steps = []
    for step in range(int(case["steps"])):
        index = step % len(batches)
        x, y, z = batches[index]
        x_noisy = lambda: noised(x, z, index)  # noqa: E731
        record = {"step": step, "batch": index, "loss": None, "regularizer": 0.0, "d": 0.0,
                  "radius": [0.0], "ascent_norm": 0.0, "ascent_skipped": False,
                  "perturbation_norm": 0.0, "perturbed_loss": 0.0, "sharpness": 0.0}
        # interval: the sharpness-aware step only on steps t mod interval == 0;
        # the others are one pass of the method's loss and the base step.
        # LookSAM ascends on t mod k == 0 and reuses g_v in between.
        every = 1 if method.ascent is None else int(method["k" if method.ascent == "looksam" else "interval"])
        ascending = method.ascent is not None and step % every == 0

        # Targets under no-grad.
        targets = {}
        with torch.no_grad():
            if previous is not None:
                targets["previous"] = model.logits(x, previous)
            if ascending and pretrained is not None:
                targets["pretrained"] = model.logits(x, pretrained)
            if ascending and history is not None:
                targets["history"] = model.logits(x, history)
            if ema is not None:
                targets["ema"] = model.logits(x, ema)
            if ascending and method.target == "tram-noise":
                targets["noise"] = model.logits(x_noisy())

        decoupled = None  # WSAM's term after the base step (decouple = true)

        # 1. Pass 1 at w (on noised inputs for TRAM-Fisher's ascent).
        logits = model.logits(x_noisy() if ascending and method.ascent == "tram-fisher" else x)
        loss = F.cross_entropy(logits, y)
        record["loss"] = float(loss.detach())
        r = regularizer(logits, x_noisy, targets)
        if r is not None:
            record["regularizer"] = float(r.detach())
            loss = loss + method["lambda"] * r
        grads = backward(loss)

        if ascending:
            # Radius: fixed, or clamp(scale * d, 0, max_radius).
            if method.target is None:
                if method.ascent in ("fsam", "tram-fisher"):
                    radius = method["gamma"]
                elif method.ascent == "esam":
                    # SWP perturbs about a fraction beta of the tensors, with a radius 1 / beta larger.
                    radius = method["rho"] / method["beta"]
                else:
                    radius = method["rho"]
            else:
                current = logits.detach()
                with torch.no_grad():
                    if method.target == "tram-fisher":
                        # Pass 1 saw the noise: d = D(p_noised || p_clean).
                        target, current = current, model.logits(x)
                    else:
                        target = targets[TARGET_OF[method.target]]
                    d = float(divergence(target, current, method["divergence"], method["reduction"],
                                         method["kernel"]))
                record["d"] = d
                radius = max(0.0, method["scale"] * d)
                if method["max_radius"] is not None:
                    radius = min(radius, method["max_radius"])
            record["radius"] = [radius]
            # 2. Ascent from an exact copy of w.
            if method.ascent in SAM_VARIANTS:
                vectors, selected, kept_state = ascent_vector(method, state, step, grads)
                e, norm, skipped = sam_ascent(method, radius, model.params, vectors, selected)
                if not skipped:
                    state.update(kept_state)
            else:
                e, norm, skipped = perturbation(method, radius, model.params, grads)
            record["ascent_norm"], record["ascent_skipped"] = norm, skipped
            if e is not None:
                record["perturbation_norm"] = math.sqrt(sum(float((ei * ei).sum()) for ei in e))
            saved = model.snapshot()
            with torch.no_grad():
                for p, ei in zip(model.params, e or []):
                    p.add_(ei)
            # ESAM's SDS: a no-grad pass at w + e ranks the rows by how much
            # their loss rose; pass 2 runs on the ceil(gamma B) that rose most.
            rows = None
            if method.ascent == "esam" and not skipped:
                with torch.no_grad():
                    before = F.cross_entropy(logits.detach(), y, reduction="none")
                    after = F.cross_entropy(model.logits(x), y, reduction="none")
                rows = torch.tensor(esam_rows(method, before, after), dtype=torch.int64)
            # 3. Pass 2 at w + e on the clean inputs (the regularizer too),
            # on ESAM's kept rows only.
            logits2 = model.logits(x if rows is None else x[rows])
            loss2 = F.cross_entropy(logits2, y if rows is None else y[rows])
            record["perturbed_loss"] = float(loss2.detach())
            record["sharpness"] = record["perturbed_loss"] - record["loss"]
            r2 = regularizer(logits2, x_noisy, targets, rows)
            pass1_grads = grads
            grads = backward(loss2 if r2 is None else loss2 + method["lambda"] * r2)
            # 4. Exact restore (not w - e).
            with torch.no_grad():
                for p, s in zip(model.params, saved):
                    p.copy_(s)
            # A skipped ascent is an ordinary base step (pass 2 ran at w):
            # only an ascent that ran gives a variant's own descent gradient.
            if method.ascent in SAM_VARIANTS and not skipped:
                grads, decoupled = descent(method, state, pass1_grads, grads)
        elif method.ascent == "looksam":
            grads = looksam_reuse(method, state, grads)

        # The base steps with the last gradient in the gradient slots.
        if previous is not None:
            previous = model.snapshot()  # θ_{t-1} of the next step
        if history is not None:
            # θ̄ <- δ θ̄ + (1 - δ) w, after the restore and before the base step.
            delta = method["target_decay"]
            history = [delta * h + (1.0 - delta) * p.detach() for h, p in zip(history, model.params)]
        for p, g in zip(model.params, grads):
            p.grad = g
        base_opt.step()
        if decoupled is not None:
            # WSAM's decoupled term, with the base's learning rate (group 0):
            # w <- w - lr a (g_p - g), after the base step.
            lr = base_opt.param_groups[0]["lr"]
            with torch.no_grad():
                for p, c in zip(model.params, decoupled):
                    p.sub_(lr * c)
        if ema is not None:
            decay = method["ema_decay"]
            ema = [decay * m + (1.0 - decay) * p.detach() for m, p in zip(ema, model.params)]
        record["params"] = {name: p.detach().tolist() for name, p in zip(model.names, model.params)}
        steps.append(record)
    return {"method": method.name, "dtype": case["dtype"], "steps": steps}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case")
    parser.add_argument("-o", "--output")
    args = parser.parse_args(argv)
    try:
        with open(args.case) as f:
            case = json.load(f)
        trace = run(case)
    except (CaseError, KeyError, TypeError, ValueError, OSError) as error:
        what = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        print(f"reference.py: {args.case}: {what}", file=sys.stderr)
        return 2
    text = json.dumps(trace, indent=1)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
(sections of docs/ALGORITHMS.md)

The computation is always in float64. A float32 case starts from the same
float32-rounded weights and inputs as tram-trace, then runs in float64: its
trace is the exact-arithmetic answer that tram-trace's float32 run
approximates (compare.py states the tolerance).

The noise z a method adds to the inputs is the batch's "noise", as given (the
case fixes it so that runs are deterministic); sigma and the noise
distribution are therefore not used here.

Usage: reference.py CASE.json [-o TRACE.json]
"""

import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

BASES = ("sgd", "adam", "adamw")
ASCENTS = ("sam", "asam", "fsam", "tram-prev", "tram-pre", "tram-ema", "tram-noise", "tram-fisher")
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
}
# The target logits each TRAM variant compares with (docs/ALGORITHMS.md §4).
TARGET_OF = {"tram-prev": "previous", "tram-pre": "pretrained", "tram-ema": "history", "tram-noise": "noise"}
STRING_OPTIONS = {"divergence", "kernel", "reduction", "formula", "radius", "noise", "reg_noise"}
BOOL_OPTIONS = {"adaptive"}


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
            else:
                self.options[key] = float(value)

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

    def noised(x, z, batch_index):
        if z is None:
            raise CaseError(f"batches[{batch_index}].noise is missing; {method.name} adds noise to its inputs")
        return x + z

    def regularizer(logits, x_noisy, targets):
        """R of one pass (docs/ALGORITHMS.md §7), with gradient through `logits`."""
        if reg == "trpo":
            return divergence(targets["previous"], logits)
        if reg == "r3f":
            noisy_logits = model.logits(x_noisy())
            return divergence(logits, noisy_logits, "symmetric")
        if reg == "mesa":
            tau = method["temperature"]
            return tau * tau * divergence(targets["ema"] / tau, logits / tau)
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
        ascending = method.ascent is not None and step % int(method["interval"]) == 0

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
                radius = method["gamma"] if method.ascent in ("fsam", "tram-fisher") else method["rho"]
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
            e, norm, skipped = perturbation(method, radius, model.params, grads)
            record["ascent_norm"], record["ascent_skipped"] = norm, skipped
            if e is not None:
                record["perturbation_norm"] = math.sqrt(sum(float((ei * ei).sum()) for ei in e))
            saved = model.snapshot()
            with torch.no_grad():
                for p, ei in zip(model.params, e or []):
                    p.add_(ei)
            # 3. Pass 2 at w + e on the clean inputs (the regularizer too).
            logits2 = model.logits(x)
            loss2 = F.cross_entropy(logits2, y)
            record["perturbed_loss"] = float(loss2.detach())
            record["sharpness"] = record["perturbed_loss"] - record["loss"]
            r2 = regularizer(logits2, x_noisy, targets)
            grads = backward(loss2 if r2 is None else loss2 + method["lambda"] * r2)
            # 4. Exact restore (not w - e).
            with torch.no_grad():
                for p, s in zip(model.params, saved):
                    p.copy_(s)

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

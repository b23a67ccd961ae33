#!/usr/bin/env python3
"""Writes the committed tram-trace cases (tests/trace/cases/*.json).

Every case is drawn from its own fixed seed, so running this again writes the
same files byte for byte. Weights follow torch.nn.Linear's default
initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); inputs are N(0, 1); labels
are uniform over the classes. Values are rounded to the case's dtype before
they are written, so tram-trace and the reference start from the same numbers.

Usage: make_cases.py [--out DIR]   (default: the cases/ folder next to this file)
"""

import argparse
import json
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

SGD_MOMENTUM = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
ADAM = {"name": "adam", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-8}
ADAMW = {"name": "adamw", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}


def draw_case(seed, layers, activation, dtype="float64", batches=2, rows=6, zero_bias=None, noise=None):
    """The model, weights and batches of a case; the method is added by the caller."""
    g = torch.Generator().manual_seed(seed)
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]

    def values(t):
        return t.to(torch_dtype).to(torch.float64).tolist()

    params = {}
    for i in range(len(layers) - 1):
        bound = 1.0 / layers[i] ** 0.5
        weight = (torch.rand(layers[i + 1], layers[i], generator=g, dtype=torch.float64) * 2 - 1) * bound
        bias = (torch.rand(layers[i + 1], generator=g, dtype=torch.float64) * 2 - 1) * bound
        if zero_bias is not None and zero_bias == 2 * i:
            bias.zero_()  # a fresh bias: with eta = 0, ASAM never perturbs it
        params[f"{2 * i}.weight"] = values(weight)
        params[f"{2 * i}.bias"] = values(bias)
    data = []
    for _ in range(batches):
        x = torch.randn(rows, layers[0], generator=g, dtype=torch.float64)
        y = torch.randint(0, layers[-1], (rows,), generator=g)
        batch = {"x": values(x), "y": y.tolist()}
        if noise is not None:
            # The z a noisy pass adds to x: N(0, noise^2), drawn here so runs are deterministic.
            batch["noise"] = values(torch.randn(rows, layers[0], generator=g, dtype=torch.float64) * noise)
        data.append(batch)
    return {"layers": layers, "activation": activation, "dtype": dtype, "params": params, "batches": data}


def case(description, seed, method, base, options=None, steps=4, checks=None, **model):
    out = {"description": description}
    out.update(draw_case(seed, **model))
    out["method"] = method
    out["options"] = options or {}
    out["base"] = base
    out["steps"] = steps
    if checks:
        out["checks"] = checks
    return out


# The tanh model shared by the SGD / SAM cases that are compared with each other.
TANH = dict(layers=[4, 5, 3], activation="tanh")
RELU = dict(layers=[4, 5, 3], activation="relu")

CASES = {
    "sgd_momentum_tanh": case(
        "Plain SGD with momentum: the base step alone.", 11, "sgd", SGD_MOMENTUM, **TANH),
    "sgd_nesterov_wd_relu_deep": case(
        "SGD with Nesterov momentum and weight decay on a 3-layer ReLU MLP.", 12, "sgd",
        {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        layers=[4, 5, 5, 3], activation="relu"),
    "adam_relu": case("Plain Adam.", 13, "adam", ADAM, **RELU),
    "adamw_tanh": case("Plain AdamW with decoupled weight decay.", 14, "adamw", ADAMW, steps=5, **TANH),
    "sam_tanh": case(
        "SAM, rho 0.05, on SGD with momentum; same model and data as sgd_momentum_tanh.", 11, "sam",
        SGD_MOMENTUM, {"rho": 0.05}, **TANH),
    "sam_rho0.1_tanh": case(
        "Differs from sam_tanh only in rho: the trace must be sensitive to rho.", 11, "sam",
        SGD_MOMENTUM, {"rho": 0.1}, checks={"differs_from": "sam_tanh"}, **TANH),
    "sam_rho0_tanh": case(
        "SAM with rho 0 is the base step exactly: same trace as sgd_momentum_tanh, bit for bit.", 11,
        "sam", SGD_MOMENTUM, {"rho": 0.0}, checks={"same_params_as": "sgd_momentum_tanh"}, **TANH),
    "sam_adam_relu": case("SAM, rho 0.1, on Adam.", 15, "sam", ADAM, {"rho": 0.1}, **RELU),
    "asam_eta0_relu": case(
        "ASAM with eta 0 (the released TRAM code's scaling): the zero first-layer bias is never "
        "perturbed.", 16, "asam", SGD_MOMENTUM, {"rho": 0.5, "eta": 0.0}, zero_bias=0, **RELU),
    "asam_eta0.01_tanh": case(
        "ASAM with the default eta 0.01 (Kwon et al. 2021) on Adam.", 17, "asam", ADAM,
        {"rho": 0.5, "eta": 0.01}, **TANH),
    "asam_adamw_relu_deep": case(
        "ASAM on AdamW, 3-layer ReLU MLP, three batches.", 18, "asam", ADAMW, {"rho": 1.0, "eta": 0.01},
        steps=5, batches=3, layers=[4, 5, 5, 3], activation="relu"),
    "fsam_tanh": case(
        "FSAM, gamma 0.1, eta_f 0.1, on SGD with momentum.", 19, "fsam", SGD_MOMENTUM,
        {"gamma": 0.1, "fisher_eta": 0.1}, **TANH),
    "fsam_adam_relu": case(
        "FSAM with a large radius and damping, on Adam.", 20, "fsam", ADAM,
        {"gamma": 0.5, "fisher_eta": 1.0}, steps=3, **RELU),
    "sam_float32_tanh": case(
        "SAM in float32 (compared with the float64 reference at a looser tolerance).", 21, "sam",
        SGD_MOMENTUM, {"rho": 0.05}, dtype="float32", **TANH),
    "asam_float32_relu": case(
        "ASAM on Adam in float32.", 22, "asam", ADAM, {"rho": 0.5, "eta": 0.01}, dtype="float32", **RELU),

    # --- TRAM (docs/ALGORITHMS.md §2-6) -------------------------------------
    # d is small (docs/ALGORITHMS.md §3), so most cases scale it up
    # to radii where a wrong ascent would show in the parameters.
    "tram-prev_tanh": case(
        "TRAM-θt-1 with scale 50: d = 0 at step 0 (θ_-1 = θ_0), then the radius follows d.", 31,
        "tram-prev", SGD_MOMENTUM, {"scale": 50.0, "eta": 0.01}, steps=5, **TANH),
    "tram-prev_default_relu": case(
        "TRAM-θt-1 with every default (scale 1: a tiny radius).", 32, "tram-prev", ADAM, steps=4, **RELU),
    "tram-prev_released_maxradius_relu": case(
        "TRAM-θt-1 with the released code's ascent (never times g), eta 0, and max_radius 0.05 "
        "(which clamps the later steps' radii).", 33, "tram-prev", SGD_MOMENTUM,
        {"scale": 20.0, "max_radius": 0.05, "formula": "released", "eta": 0.0}, steps=5, **RELU),
    "tram-noise_nonadaptive_relu": case(
        "TRAM-ε with adaptive=false: SAM's direction g / ||g|| with the trust-region radius.", 47,
        "tram-noise", SGD_MOMENTUM, {"scale": 20.0, "adaptive": False}, noise=0.3, **RELU),
    "tram-prev_released_nonadaptive_tanh": case(
        "TRAM-θt-1 with the released code's non-adaptive ascent: every element moves by r / ||g||.", 48,
        "tram-prev", SGD_MOMENTUM, {"scale": 20.0, "formula": "released", "adaptive": False}, **TANH),
    "tram-pre_symmetric_adam_tanh": case(
        "TRAM-θ0 with the symmetric KL, on Adam.", 34, "tram-pre", ADAM,
        {"scale": 20.0, "divergence": "symmetric"}, steps=5, **TANH),
    # --- the paper's ablations: TRAM-EMA, L2 and MMD distances; interval --------
    "tram-ema_tanh": case(
        "TRAM-EMA, target_decay 0.5: θ̄ follows the parameters before every base step.", 51, "tram-ema",
        SGD_MOMENTUM, {"scale": 50.0, "target_decay": 0.5}, steps=5, **TANH),
    "tram-ema_decay0_tanh": case(
        "TRAM-EMA with target_decay 0 is TRAM-θt-1 bit for bit (same model and data as tram-prev_tanh).", 31,
        "tram-ema", SGD_MOMENTUM, {"scale": 50.0, "eta": 0.01, "target_decay": 0.0}, steps=5,
        checks={"same_params_as": "tram-prev_tanh"}, **TANH),
    "tram-ema_decay1_symmetric_adam_tanh": case(
        "TRAM-EMA with target_decay 1 is TRAM-θ0 bit for bit (as tram-pre_symmetric_adam_tanh).", 34,
        "tram-ema", ADAM, {"scale": 20.0, "divergence": "symmetric", "target_decay": 1.0}, steps=5,
        checks={"same_params_as": "tram-pre_symmetric_adam_tanh"}, **TANH),
    "tram-prev_l2_tanh": case(
        "TRAM-θt-1 with the L2 distance of the logits.", 52, "tram-prev", SGD_MOMENTUM,
        {"scale": 0.5, "divergence": "l2"}, steps=5, **TANH),
    "tram-noise_l2_legacy_relu": case(
        "TRAM-ε with the L2 distance and the legacy reduction (/ batch size once more).", 53, "tram-noise",
        SGD_MOMENTUM, {"scale": 5.0, "divergence": "l2", "reduction": "legacy"}, noise=0.3, **RELU),
    "tram-pre_mmd_adam_relu": case(
        "TRAM-θ0 with the MMD distance (inverse multiquadric kernel, the default).", 54, "tram-pre", ADAM,
        {"scale": 5.0, "divergence": "mmd"}, steps=5, **RELU),
    "tram-noise_mmd_rbf_legacy_tanh": case(
        "TRAM-ε with the MMD distance, RBF kernel, legacy reduction.", 55, "tram-noise", SGD_MOMENTUM,
        {"scale": 50.0, "divergence": "mmd", "kernel": "rbf", "reduction": "legacy"}, noise=0.3, **TANH),
    "tram-prev_mmd_imq_tanh": case(
        "TRAM-θt-1 with the MMD distance and the imq kernel.", 56, "tram-prev", SGD_MOMENTUM,
        {"scale": 20.0, "divergence": "mmd", "kernel": "imq"}, steps=5, **TANH),
    "tram-pre_mmd_imq3_relu": case(
        "TRAM-θ0 with the MMD distance and the imq3 kernel.", 57, "tram-pre", SGD_MOMENTUM,
        {"scale": 20.0, "divergence": "mmd", "kernel": "imq3"}, steps=5, **RELU),
    "sam_interval3_tanh": case(
        "SAM with interval 3: the ascent at steps 0 and 3, one pass and the base step otherwise.", 58, "sam",
        SGD_MOMENTUM, {"rho": 0.1, "interval": 3}, steps=5, **TANH),
    "tram-prev+trpo_interval2_relu": case(
        "TRAM-θt-1 + TRPO with interval 2: off-steps keep the regularizer (and θt-1 still follows).", 59,
        "tram-prev+trpo", SGD_MOMENTUM, {"scale": 20.0, "lambda": 0.5, "interval": 2}, steps=5, **RELU),
    "tram-fisher_interval2_tanh": case(
        "TRAM-Fisher with interval 2: off-steps are one clean pass.", 60, "tram-fisher", SGD_MOMENTUM,
        {"gamma": 0.1, "interval": 2}, noise=0.1, steps=5, **TANH),
    "tram-noise_tanh": case(
        "TRAM-ε: d from the model on x + noise (noise given per batch).", 35, "tram-noise", SGD_MOMENTUM,
        {"scale": 20.0}, noise=0.3, **TANH),
    "tram-noise_reverse_legacy_relu": case(
        "TRAM-ε with the reverse KL and the released code's legacy reduction.", 36, "tram-noise",
        SGD_MOMENTUM, {"scale": 2000.0, "divergence": "reverse", "reduction": "legacy"}, noise=0.3,
        layers=[4, 5, 5, 3], activation="relu"),
    "tram-fisher_tanh": case(
        "TRAM-Fisher, fixed radius gamma: pass 1 on x + noise gives g_z.", 37, "tram-fisher",
        SGD_MOMENTUM, {"gamma": 0.1, "fisher_eta": 0.1}, noise=0.1, **TANH),
    "tram-fisher_trust_region_adamw_relu": case(
        "TRAM-Fisher with the trust-region radius scale * D(p_noised || p_clean), on AdamW.", 38,
        "tram-fisher", ADAMW, {"radius": "trust_region", "scale": 50.0}, noise=0.2, **RELU),
    "tram-prev_float32_tanh": case(
        "TRAM-θt-1 in float32.", 39, "tram-prev", SGD_MOMENTUM, {"scale": 50.0}, dtype="float32", **TANH),

    # --- trust-region regularizers (docs/ALGORITHMS.md §7) -------------------
    "trpo_tanh": case(
        "TRPO-KL regularizer, lambda 0.5: R = KL(p_θt-1 || p_θ).", 41, "trpo", SGD_MOMENTUM,
        {"lambda": 0.5}, steps=5, **TANH),
    "r3f_relu": case(
        "R3F, lambda 0.5: symmetric KL between the clean and the noised pass.", 42, "r3f", ADAM,
        {"lambda": 0.5}, noise=0.1, **RELU),
    "mesa_tanh": case(
        "MESA with a fast EMA (decay 0.5) and temperature 2.", 43, "mesa", SGD_MOMENTUM,
        {"lambda": 1.0, "ema_decay": 0.5, "temperature": 2.0}, steps=5, **TANH),
    "asam+trpo_relu": case(
        "ASAM+TRPO (paper C.3): the regularized loss in both passes.", 44, "asam+trpo", SGD_MOMENTUM,
        {"rho": 0.5, "lambda": 0.3}, steps=5, **RELU),
    "sam+r3f_tanh": case(
        "SAM+R3F: the noised pass is run at w and at w + e.", 45, "sam+r3f", ADAM,
        {"rho": 0.1, "lambda": 0.5}, noise=0.1, **TANH),
    "tram-noise+mesa_relu": case(
        "TRAM-ε with a MESA regularizer.", 46, "tram-noise+mesa", SGD_MOMENTUM,
        {"scale": 20.0, "lambda": 0.5, "ema_decay": 0.8}, noise=0.3, **RELU),

    # --- the SAM variants: GSAM, LookSAM, ESAM, F-SAM, VaSSO, WSAM -----------
    # The cases on sam_tanh's model and data (seed 11) are related to it by
    # their checks: the option that makes each differ from SAM must show.
    "gsam_tanh": case(
        "GSAM, alpha 0.4: descent g_p - alpha g_perp; as sam_tanh but for the surrogate-gap term.", 11,
        "gsam", SGD_MOMENTUM, {"rho": 0.05, "alpha": 0.4}, checks={"differs_from": "sam_tanh"}, **TANH),
    "gsam_adaptive_adam_relu": case(
        "GSAM with ASAM's ascent (adaptive, eta 0.01), on Adam.", 61, "gsam", ADAM,
        {"rho": 0.5, "alpha": 0.4, "adaptive": True, "eta": 0.01}, **RELU),
    "gsam_interval2_tanh": case(
        "GSAM with interval 2: the ascent and g_perp at steps 0, 2 and 4; the base steps with g otherwise.",
        62, "gsam", SGD_MOMENTUM, {"rho": 0.1, "alpha": 0.4, "interval": 2}, steps=5, **TANH),
    "looksam_k3_tanh": case(
        "LookSAM, k 3: SAM steps at 0, 3 and 6 keep g_v; the four steps between are one pass with "
        "g + alpha (||g|| / ||g_v||) g_v.", 63, "looksam", SGD_MOMENTUM, {"rho": 0.1, "k": 3, "alpha": 0.7},
        steps=7, **TANH),
    "looksam_adam_relu": case(
        "LookSAM with the default k 5 and alpha 0.5 on Adam: ascents at steps 0 and 5.", 64, "looksam", ADAM,
        {"rho": 0.1, "alpha": 0.5}, steps=6, **RELU),
    "esam_tanh": case(
        "ESAM, beta 0.5, gamma 0.5, seed 0: SWP perturbs 2 or 3 of the 4 tensors at radius rho / beta, "
        "SDS keeps the 3 of 6 rows whose loss rose most.", 65, "esam", SGD_MOMENTUM,
        {"rho": 0.05, "beta": 0.5, "gamma": 0.5}, **TANH),
    "esam_beta1_gamma1_tanh": case(
        "ESAM with beta 1 and gamma 1 (every tensor, every row) is SAM bit for bit: same trace as sam_tanh.",
        11, "esam", SGD_MOMENTUM, {"rho": 0.05, "beta": 1.0, "gamma": 1.0},
        checks={"same_params_as": "sam_tanh"}, **TANH),
    "esam_beta0.3_relu": case(
        "ESAM, beta 0.3, seed 8: one or two tensors perturbed, none at step 3 (e = 0, not a skip); "
        "gamma 0.6 keeps ceil(3.6) = 4 rows.", 66, "esam", ADAM,
        {"rho": 0.05, "beta": 0.3, "gamma": 0.6, "seed": 8}, steps=5, **RELU),
    "esam+trpo_relu": case(
        "ESAM+TRPO, seed 2: pass 2's loss and regularizer over SDS's kept rows only.", 67, "esam+trpo",
        SGD_MOMENTUM, {"rho": 0.1, "seed": 2, "lambda": 0.5}, steps=5, **RELU),
    "friendly-sam_tanh": case(
        "F-SAM, sigma 1, lambda 0.9: SAM at step 0 (m = g), then the ascent along g - sigma m.", 11,
        "friendly-sam", SGD_MOMENTUM, {"rho": 0.05}, checks={"differs_from": "sam_tanh"}, **TANH),
    "friendly-sam_adaptive_relu": case(
        "F-SAM with ASAM's ascent, sigma 0.5, lambda 0.6, on Adam.", 68, "friendly-sam", ADAM,
        {"rho": 0.5, "adaptive": True, "sigma": 0.5, "friendly_lambda": 0.6}, steps=5, **RELU),
    "friendly-sam+trpo_relu": case(
        "F-SAM+TRPO: m follows the regularized pass-1 gradient.", 69, "friendly-sam+trpo", SGD_MOMENTUM,
        {"rho": 0.1, "lambda": 0.3}, steps=5, **RELU),
    "vasso_tanh": case(
        "VaSSO, theta 0.5: the ascent along d <- (1 - theta) d + theta g (d = g at step 0).", 11, "vasso",
        SGD_MOMENTUM, {"rho": 0.05, "theta": 0.5}, checks={"differs_from": "sam_tanh"}, **TANH),
    "wsam_decoupled_sgd_tanh": case(
        "WSAM, gamma 0.9 (a = 9), decoupled: the base steps with g, then w <- w - lr a (g_p - g).", 70,
        "wsam", {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        {"rho": 0.05, "gamma": 0.9, "decouple": True}, steps=5, **TANH),
    "wsam_coupled_adam_relu": case(
        "WSAM, gamma 0.8 (a = 4), not decoupled: the base steps with a g_p + (1 - a) g, on Adam.", 71, "wsam",
        ADAM, {"rho": 0.1, "gamma": 0.8, "decouple": False}, **RELU),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "cases"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, content in CASES.items():
        path = os.path.join(args.out, name + ".json")
        with open(path, "w") as f:
            json.dump(content, f, indent=1)
            f.write("\n")
    print(f"wrote {len(CASES)} cases to {args.out}")


if __name__ == "__main__":
    main()

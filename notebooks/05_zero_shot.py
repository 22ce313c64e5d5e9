# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 — Zero-shot retention on the natural-image probe
#
# **Question: does adapting SAM to the task sequence cost it its zero-shot ability on natural
# images, and which methods keep it?** The probe (COCO, test only, never trained on) is scored
# after every task step; SAM zero-shot is the reference. Example masks compare zero-shot with
# the final model of one method.

# %%
# %config InlineBackend.figure_format = 'png'
import math
import time
from pathlib import Path

from IPython.display import Markdown, display

import cosam.notebook as nb
from cosam import gallery, plots, report_tables
from cosam.io import portable
from cosam.report import markdown_table
from cosam.stats import fmt_stat

plots.setup()
nb.begin(globals())

# %% tags=["parameters"]
profile = "cpu"
order = "paper"
seeds = [0]
methods = [
    "zeroshot",
    "sequential",
    "joint",
    "lwf",
    "ewc",
    "replay",
    "l2p",
    "dualprompt",
    "coda",
    "decoder_tuning",
    "sam_adapter",
    "sequential_moda",
    "decoder_tuning_moda",
    "sam_adapter_moda",
]  # Table 2's rows
backbone = None  # None: the profile's (vit_t; LiteMedSAM fallback when its weights are absent)
data_root = None
results_dir = "results/runs"
cache_dir = None
overrides = {}  # merged into every run's config, e.g. {"train": {"epochs": 2}}
n_examples = 4  # probe images shown with their predicted masks
example_method = "sequential"  # whose final model is shown beside zero-shot

# %%
params = nb.end(
    globals(),
    declared=[
        "profile",
        "order",
        "seeds",
        "methods",
        "backbone",
        "data_root",
        "results_dir",
        "cache_dir",
        "overrides",
        "n_examples",
        "example_method",
    ],
)
params

# %%
from cosam.io import write_csv
from cosam.report import data_label, load_run
from cosam.runner import Context, run

ctx = Context()  # one model and feature cache for every run
runs = {}  # method -> [RunRecord per seed]
walls = []
for method in nb.as_list(methods):
    for s in nb.as_list(seeds):
        t0 = time.perf_counter()
        path = run(nb.config_for(params, method, int(s)), ctx=ctx)  # finished runs are reused
        runs.setdefault(method, []).append(load_run(path))
        walls.append(
            {
                "method": method,
                "seed": int(s),
                "this_call_s": time.perf_counter() - t0,
                "run_compute_s": runs[method][-1].compute_s,
                "run": portable(path),
            }
        )
records = [r for recs in runs.values() for r in recs]
label = data_label(records)
synthetic = "SYNTHETIC" in label
res = records[0].meta["resolved"]
report_dir = Path(results_dir) / profile / "reports"
display(
    Markdown(
        f"Data: **{label}**. Backbone `{res['backbone']}` at {res['image_size']} px; "
        f"order {', '.join(res['order'])}; seeds {nb.as_list(seeds)}; profile `{profile}`."
    )
)
display(
    Markdown(
        "Runs (this_call_s: this notebook's time, near 0 for a reused run; run_compute_s: the run's own "
        "train + eval + encode seconds):\n\n"
        + markdown_table(walls, ["method", "seed", "this_call_s", "run_compute_s", "run"])
    )
)

# %% [markdown]
# ## Probe IoU after every step (first seed; dashed: SAM zero-shot)

# %%
first = {m: recs[0] for m, recs in runs.items()}
with_probe = {m: r for m, r in first.items() if r.matrix.probe is not None}
if not with_probe:
    raise RuntimeError("these runs have no probe (data.include_probe=false); nothing to report")
zs_source = "zeroshot run" if "zeroshot" in with_probe else "row 0 of the first run"
zero_shot = (with_probe.get("zeroshot") or next(iter(with_probe.values()))).matrix.summary("iou")[
    "probe_zero_shot"
]
probe_name = next(iter(with_probe.values())).matrix.probe
ax = plots.probe_curves(
    with_probe, zero_shot, name=plots.title(f"Probe ({probe_name}) IoU after every step", synthetic)
)
# %%
table = report_tables.probe_rows(with_probe)
write_csv(report_dir / "05_zero_shot_probe.csv", table)
display(
    Markdown(
        f"Probe IoU (%) after every step; zero-shot from the {zs_source}; drop = before − after the last step.\n\n"
        + markdown_table(table, pct=[k for k in table[0] if k != "method"])
    )
)
if any(len(recs) > 1 for recs in runs.values()):
    stats = report_tables.seed_stats(runs, keys=("probe_zero_shot", "probe_last"))
    display(
        Markdown(
            "Over seeds (mean ± std):\n\n"
            + markdown_table(
                [
                    {
                        "method": m,
                        "probe before": fmt_stat(s["probe_zero_shot"]),
                        "probe after last": fmt_stat(s["probe_last"]),
                    }
                    for m, s in stats.items()
                ]
            )
        )
    )

# %% [markdown]
# ## Example masks on probe images: zero-shot vs the final model
#
# The engine keeps only the **last** step's state file (`state/step_<n>.pt`), so the examples can
# only show the final model, not the model after an intermediate task. Masks are predicted through
# `cosam.inspect.predict_examples` with the evaluation's box prompt (red: ground truth; blue: prediction).

# %%
from cosam.data import load_pair
from cosam.inspect import benchmark_of, predict_examples

shown = [m for m in ("zeroshot", example_method) if m in first]
agree = math.nan
if len(shown) == 2 and n_examples > 0:
    bench = benchmark_of(first[example_method].path)
    samples = list(bench.probe.test[:n_examples])
    preds, worst = {}, 0.0
    for m in shown:
        ex = predict_examples(first[m].path, samples, model=ctx.model)
        preds[m] = [(e.pred, e.iou) for e in ex]
        stored = first[m].matrix.per_image(first[m].matrix.n_rows - 1)[bench.probe.name]
        worst = max([worst] + [abs(e.iou - stored[i][0]) for i, e in enumerate(ex)])
    agree = worst
    pairs = [load_pair(s) for s in samples]
    gallery.show_jpeg(
        gallery.example_grid(
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            preds,
            labels=[s.name for s in samples],
            suptitle=plots.title(
                f"{bench.probe.name}: zero-shot vs final {example_method}", synthetic
            ),
        )
    )
    display(
        Markdown(
            f"The example IoUs reproduce the run's stored per-image scores (largest difference {agree:.2g})."
        )
    )
else:
    display(
        Markdown(
            f"(examples need the zeroshot and {example_method} runs; methods were {list(first)})"
        )
    )

# %% [markdown]
# ## Conclusions

# %%
last = {
    m: report_tables.probe_series(r)[1][-1] for m, r in with_probe.items()
}  # probe IoU after the last step
trained = {m: x for m, x in last.items() if m != "zeroshot" and math.isfinite(x)}
lines = [
    f"- Data: {label}.",
    f"- SAM zero-shot scores {100 * zero_shot:.1f}% IoU on the probe ({probe_name}).",
]
if len(trained) == 1:
    ((only, x),) = trained.items()
    lines.append(
        f"- After the last step, {only} scores {100 * x:.1f}% ({100 * (x - zero_shot):+.1f} points vs zero-shot)."
    )
elif trained:
    ranked = sorted(trained, key=trained.get)
    keep, lose = ranked[-1], ranked[0]
    above = [m for m, x in trained.items() if x >= zero_shot]
    lines.append(
        f"- After the last step, {keep} keeps the most ({100 * trained[keep]:.1f}%, "
        f"{100 * (trained[keep] - zero_shot):+.1f} points vs zero-shot) and {lose} the least "
        f"({100 * trained[lose]:.1f}%, {100 * (trained[lose] - zero_shot):+.1f}); "
        f"{len(above)} of {len(trained)} trained methods stay at or above zero-shot."
    )
# methods whose row 0 is not SAM zero-shot (prompt methods insert their untrained prompts; a capped
# method is scored on its own probe images): their drop is measured from their own start
first = {m: report_tables.probe_series(r)[1][0] for m, r in with_probe.items() if m != "zeroshot"}
off = {m: x for m, x in first.items() if math.isfinite(x) and abs(x - zero_shot) >= 0.005}
if off:
    lines.append(
        "- Before any training, "
        + ", ".join(
            f"{m} starts at {100 * x:.1f}% ({100 * (x - zero_shot):+.1f} vs zero-shot)"
            for m, x in sorted(off.items(), key=lambda kv: kv[1])
        )
        + ": their row 0 is not SAM's (untrained prompts are already inserted, or the method is"
        " scored on its own capped images), so the table's drop column measures them from their own"
        " start."
    )
if "sequential" in with_probe and with_probe["sequential"].matrix.is_full_sequence:
    steps, vals = report_tables.probe_series(with_probe["sequential"])
    k = min(range(len(vals)), key=lambda i: vals[i])
    lines.append(
        f"- Sequential fine-tuning is lowest on the probe after step {k} "
        f"({with_probe['sequential'].matrix.rows[k]}: {100 * vals[k]:.1f}%) and ends at {100 * vals[-1]:.1f}%."
    )
if math.isfinite(agree):
    lines.append(
        f"- Re-predicting {len(samples)} probe images from the saved final states reproduces the stored "
        f"per-image IoU (largest difference {agree:.2g})."
    )
display(Markdown("\n".join(lines)))

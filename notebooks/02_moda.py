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
# # 02 — MoDA on HQ-SAM, Decoder-Tuning and SAM-Adapter
#
# **Question: does MoDA's adapter pool with a token router stop forgetting, and what does it
# cost?** Each base (HQ-SAM = `sequential`, `decoder_tuning`, `sam_adapter`) runs alone and
# with MoDA over the same sequence; SAM zero-shot is the reference. The report gives Last / Avg /
# FF, the task matrices, the router's task-id accuracy and confusion matrix after the last task,
# and the storage each method keeps per task. Finished runs are reused, not retrained.

# %%
# %config InlineBackend.figure_format = 'png'
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import cosam.notebook as nb
from cosam import plots
from cosam.io import portable
from cosam.report import markdown_table

plots.setup(dpi=80)
nb.begin(globals())

# %% tags=["parameters"]
profile = "cpu"
order = "paper"
seeds = [0]
bases = ["sequential", "decoder_tuning", "sam_adapter"]   # each runs alone and with MoDA (<base>_moda)
moda_options = {}      # MoDA options for every *_moda run, e.g. {"router": "cosine"}
backbone = None
data_root = None
results_dir = "results/runs"
cache_dir = None
overrides = {}

# %%
params = nb.end(globals(), declared=['profile', 'order', 'seeds', 'bases', 'moda_options', 'backbone', 'data_root', 'results_dir', 'cache_dir', 'overrides'])
params

# %%
from cosam.engine import Context, run
from cosam.io import write_csv
from cosam.report import data_label, load_router, load_run, moda_rows, router_accuracy_rows

methods = ["zeroshot"] + [m for b in nb.as_list(bases) for m in (b, f"{b}_moda")]
ctx = Context()
runs, walls = {}, []
for method in methods:
    for s in nb.as_list(seeds):
        extra = {"method_options": dict(moda_options)} if method.endswith("_moda") and moda_options else None
        t0 = time.perf_counter()
        path = run(nb.config_for(params, method, int(s), extra=extra), ctx=ctx)
        runs.setdefault(method, []).append(load_run(path))
        walls.append({"method": method, "seed": int(s), "this_call_s": time.perf_counter() - t0,
                      "run_compute_s": runs[method][-1].compute_s, "run": portable(path)})
records = [r for recs in runs.values() for r in recs]
label = data_label(records)
synthetic = "SYNTHETIC" in label
res = records[0].meta["resolved"]
report_dir = Path(results_dir) / profile / "reports"
first = {m: recs[0] for m, recs in runs.items()}
display(Markdown(f"Data: **{label}**. Backbone `{res['backbone']}` at {res['image_size']} px; "
                 f"order {', '.join(res['order'])}; seeds {nb.as_list(seeds)}; profile `{profile}`."))
display(Markdown(markdown_table(walls, ["method", "seed", "this_call_s", "run_compute_s", "run"])))

# %% [markdown]
# ## Each base alone and with MoDA (first seed; IoU/BIoU %, router accuracy after the last task)

# %%
table = moda_rows(first)
write_csv(report_dir / "02_moda_table.csv", table)
pct = [k for k in table[0] if k.endswith(("_iou", "_biou"))] + ["router_acc"]
display(Markdown(markdown_table(table, pct=pct)))
if any(len(recs) > 1 for recs in runs.values()):
    stats = plots.seed_stats(runs)
    display(Markdown("Over seeds (mean ± std):\n\n" + markdown_table(plots.table2_rows(stats))))
from cosam.report import load_sweep
sweep = load_sweep(results_dir, profile)
if sweep is not None:
    display(Markdown(f"### From the seeds × orders sweep (`{sweep.path}`)\n\n" + sweep.embedded_markdown()))
    sweep.figure();

# %%
from cosam.report import n_test_images, restrict_to_subset
counts = {m: n_test_images(r) for m, r in first.items()}
full_n = max([c for c in counts.values() if c] or [0])
capped = [m for m, c in counts.items() if c and c < full_n]
if capped:
    sub = first[capped[0]]
    same = []
    for m, r in first.items():
        try:
            same.append(moda_rows({m: r if m in capped else restrict_to_subset(r, sub)})[0])
        except ValueError:
            pass
    display(Markdown(f"**{', '.join(capped)} ran on {counts[capped[0]]} test images (the others on {full_n}).** "
                     f"Every method on those images (%):\n\n" + markdown_table(same, pct=pct)))

# %% [markdown]
# ## Task matrices: each base (left) and with MoDA (right), IoU %

# %%
pairs = [(b, f"{b}_moda") for b in nb.as_list(bases) if b in first and f"{b}_moda" in first]
if pairs:
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 3.6 * len(pairs)), squeeze=False, layout="constrained")
    for (b, m), row in zip(pairs, axes):
        plots.matrix_heatmap(first[b].matrix, "iou", ax=row[0], name=b)
        plots.matrix_heatmap(first[m].matrix, "iou", ax=row[1], name=m)
    fig.suptitle(plots.title("Task matrices (row t: after training step t)", synthetic))

# %% [markdown]
# ## The router: confusion after the last task (% of each domain's test images per adapter)

# %%
routed = {m: load_router(r) for m, r in first.items() if load_router(r)}
if routed:
    fig, axes = plt.subplots(1, len(routed), figsize=(4.6 * len(routed), 4.2), squeeze=False, layout="constrained")
    for ax, (m, router) in zip(axes[0], routed.items()):
        plots.confusion_heatmap(router["final"], ax=ax, name=m)
    fig.suptitle(plots.title("Router confusion after the last task", synthetic))
    for m, router in routed.items():
        acc_rows = router_accuracy_rows(router)
        write_csv(report_dir / f"02_moda_router_{m}.csv", acc_rows)
    m0 = next(iter(routed))
    acc_rows = router_accuracy_rows(routed[m0])
    display(Markdown(f"Task-id accuracy of `{m0}` on the seen tasks' test images after each step (%):\n\n"
                     + markdown_table(acc_rows, list(acc_rows[-1]), pct=[k for k in acc_rows[-1] if k != "step"])))

# %% [markdown]
# ## Storage and compute per task

# %%
cost = [{"method": r["method"], "stored params / task": r["stored_params_per_task"],
         "stored params, all": r["stored_params_total"], "buffer images": r["buffer_images"],
         "train s": r["train_s"]} for r in table]
display(Markdown(markdown_table(cost)))
fig, ax = plt.subplots(figsize=(7, 0.4 * len(cost) + 1.2), layout="constrained")
ax.barh([c["method"] for c in cost], [(c["stored params, all"] or 0) / 1e6 for c in cost], color="tab:blue")
ax.invert_yaxis()
ax.set_xlabel("parameters stored after the last task (millions)")
ax.set_title(plots.title("What each method keeps", synthetic));

# %% [markdown]
# ## Conclusions

# %%
by = {r["method"]: r for r in table}
lines = [f"- Data: {label}."]
for b, m in pairs:
    d = 100 * (by[m]["last_iou"] - by[b]["last_iou"])
    ff = 100 * by[m]["ff_iou"]
    ok = "meets" if d > 0 and ff <= 1.0 else "misses"
    lines.append(f"- {b}: Last-IoU {100 * by[b]['last_iou']:.1f}% → {100 * by[m]['last_iou']:.1f}% with MoDA ({d:+.1f} points); "
                 f"FF-IoU {100 * by[b]['ff_iou']:.1f} → {ff:.1f} points; router accuracy "
                 f"{100 * (by[m]['router_acc'] or 0):.1f}%. This {ok} the target (Last up, FF ≤ 1 point).")
if "zeroshot" in by:
    # zero-shot on the images each MoDA run was scored on (a capped run: its own subset)
    zs = {m: (by["zeroshot"]["last_iou"] if counts.get(m) == full_n else
              moda_rows({"zeroshot": restrict_to_subset(first["zeroshot"], first[m])})[0]["last_iou"]) for _, m in pairs}
    above = [m for _, m in pairs if by[m]["last_iou"] > zs[m]]
    lines.append(f"- SAM zero-shot scores {100 * by['zeroshot']['last_iou']:.1f}% Last-IoU; "
                 f"{len(above)} of {len(pairs)} MoDA variants end above it on the same test images"
                 + (f" ({', '.join(above)})." if above else "."))
for m, router in routed.items():
    final = router["final"]
    worst = min(final["per_task"], key=final["per_task"].get)
    conf = final["confusion"][worst]
    wrong = max((c, final["adapters"][j]) for j, c in enumerate(conf) if final["adapters"][j] != worst) if len(conf) > 1 else (0, "-")
    lines.append(f"- {m}: the router is least accurate on {worst} ({100 * final['per_task'][worst]:.1f}%), "
                 f"whose images it sends most often to the {wrong[1]} adapter ({wrong[0]} images).")
display(Markdown("\n".join(lines)))

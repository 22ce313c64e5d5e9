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
import time
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import cosam.notebook as nb
from cosam import plots, report_tables
from cosam.io import portable
from cosam.report import markdown_table

plots.setup()
nb.begin(globals())

# %% tags=["parameters"]
profile = "cpu"
order = "paper"
seeds = [0]
bases = [
    "sequential",
    "decoder_tuning",
    "sam_adapter",
]  # each runs alone and with MoDA (<base>_moda)
moda_options = {}  # MoDA options for every *_moda run, e.g. {"router": "cosine"}
backbone = None
data_root = None
results_dir = "results/runs"
cache_dir = None
overrides = {}

# %%
params = nb.end(
    globals(),
    declared=[
        "profile",
        "order",
        "seeds",
        "bases",
        "moda_options",
        "backbone",
        "data_root",
        "results_dir",
        "cache_dir",
        "overrides",
    ],
)
params

# %%
from cosam.io import write_csv
from cosam.report import data_label, load_router, load_run, moda_rows, router_accuracy_rows
from cosam.runner import Context, run

methods = ["zeroshot"] + [m for b in nb.as_list(bases) for m in (b, f"{b}_moda")]
ctx = Context(capture_blocks=True)  # the bases' encoding also fills the MoDA runs' block inputs
runs, walls = {}, []
for method in methods:
    for s in nb.as_list(seeds):
        extra = (
            {"method_options": dict(moda_options)}
            if method.endswith("_moda") and moda_options
            else None
        )
        t0 = time.perf_counter()
        path = run(nb.config_for(params, method, int(s), extra=extra), ctx=ctx)
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
first = {m: recs[0] for m, recs in runs.items()}
display(
    Markdown(
        f"Data: **{label}**. Backbone `{res['backbone']}` at {res['image_size']} px; "
        f"order {', '.join(res['order'])}; seeds {nb.as_list(seeds)}; profile `{profile}`."
    )
)
display(Markdown(markdown_table(walls, ["method", "seed", "this_call_s", "run_compute_s", "run"])))

# %% [markdown]
# ## How MoDA works
#
# Fine-tuning one set of weights task after task overwrites what earlier tasks needed
# (**forgetting**). MoDA (Mixture of Domain Adapters) never overwrites: it keeps one **adapter per
# task** and learns to pick the right one for each test image.
#
# 1. **The base decides what an adapter is.** With HQ-SAM (`sequential`) an adapter is the HQ
#    branch (the extra output token and its small fusion network); with Decoder-Tuning it is the
#    mask decoder; with SAM-Adapter it is the adapters inside the encoder plus the decoder. Task
#    *t* trains adapter *t* exactly as the base would, starting from SAM's weights; once trained it
#    is frozen in the **pool**.
# 2. **Tokens that summarise the image.** MoDA adds a **Global Feature Token (GFT)** and a few
#    **Global Assistant Tokens (GAT)** to the frozen image encoder. In each encoder block they
#    attend to the image patches, but the patches do not attend to them (**one-way**), so SAM's
#    own image features, which every adapter decodes from, are unchanged, and one encoder pass
#    gives both the features and the GFT's output, the image's **query** *q*. (The released code
#    lets patches read the tokens too: `attention=full`.)
# 3. **The router.** Each task *t* has a key *k*<sub>t</sub>; the router scores *s*(*q*, *k*<sub>t</sub>) (a linear
#    layer by default, or cosine similarity) and sends the image to the task *t* of the highest score. Tokens and
#    router are trained after each task on a small **buffer** of `buffer_size` training images per
#    task seen so far, with the task id as the label.
# 4. **What can still go wrong.** Adapters cannot forget, so MoDA's forgetting comes only from
#    **routing errors**: an image of task *j* sent to adapter *t* ≠ *j*. The router's task-id
#    accuracy and confusion matrix below show where. The price is storage: one adapter and the
#    buffer images per task.

# %%
from cosam.diagrams import moda_diagram

fig = moda_diagram(n_gat=(moda_options or {}).get("n_gat", 9), n_tasks=len(res["order"]))
# %% [markdown]
# ## Each base alone and with MoDA (first seed; IoU/BIoU %, router accuracy after the last task)

# %%
table = moda_rows(first)
write_csv(report_dir / "02_moda_table.csv", table)
pct = [k for k in table[0] if k.endswith(("_iou", "_biou"))] + ["router_acc"]
display(Markdown(markdown_table(table, pct=pct)))
if any(len(recs) > 1 for recs in runs.values()):
    stats = report_tables.seed_stats(runs)
    display(
        Markdown("Over seeds (mean ± std):\n\n" + markdown_table(report_tables.table2_rows(stats)))
    )
from cosam.sweep_result import load_sweep

sweep = load_sweep(results_dir, profile)
if sweep is not None:
    display(
        Markdown(
            f"### From the seeds × orders sweep (`{sweep.path}`)\n\n" + sweep.embedded_markdown()
        )
    )
    sweep.figure()

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
    display(
        Markdown(
            f"**{', '.join(capped)} ran on {counts[capped[0]]} test images (the others on {full_n}).** "
            f"Every method on those images (%):\n\n" + markdown_table(same, pct=pct)
        )
    )

# %% [markdown]
# ## Task matrices: each base (left) and with MoDA (right), IoU %

# %%
pairs = [(b, f"{b}_moda") for b in nb.as_list(bases) if b in first and f"{b}_moda" in first]
if pairs:
    fig, axes = plt.subplots(
        len(pairs), 2, figsize=(12, 4.4 * len(pairs)), squeeze=False, layout="constrained"
    )
    for (b, m), row in zip(pairs, axes):
        plots.matrix_heatmap(first[b].matrix, "iou", ax=row[0], name=b)
        plots.matrix_heatmap(first[m].matrix, "iou", ax=row[1], name=m)
    fig.suptitle(plots.title("Task matrices (row t: after training step t)", synthetic))

# %% [markdown]
# ## The router: confusion after the last task (% of each domain's test images per adapter)

# %%
routed = {m: load_router(r) for m, r in first.items() if load_router(r)}
if routed:
    fig, axes = plt.subplots(
        1, len(routed), figsize=(5.6 * len(routed), 4.8), squeeze=False, layout="constrained"
    )
    for ax, (m, router) in zip(axes[0], routed.items()):
        plots.confusion_heatmap(router["final"], ax=ax, name=m)
    fig.suptitle(plots.title("Router confusion after the last task", synthetic))
    for m, router in routed.items():
        acc_rows = router_accuracy_rows(router)
        write_csv(report_dir / f"02_moda_router_{m}.csv", acc_rows)
    m0 = next(iter(routed))
    acc_rows = router_accuracy_rows(routed[m0])
    display(
        Markdown(
            f"Task-id accuracy of `{m0}` on the seen tasks' test images after each step (%):\n\n"
            + markdown_table(
                acc_rows, list(acc_rows[-1]), pct=[k for k in acc_rows[-1] if k != "step"]
            )
        )
    )

# %% [markdown]
# ## Storage and compute per task

# %%
cost = [
    {
        "method": r["method"],
        "stored params / task": r["stored_params_per_task"],
        "stored params, all": r["stored_params_total"],
        "buffer images": r["buffer_images"],
        "train s": r["train_s"],
        "router s": r["router_s"],
    }
    for r in table
]
display(Markdown(markdown_table(cost)))
fig, ax = plt.subplots(figsize=(7, 0.4 * len(cost) + 1.2), layout="constrained")
ax.barh(
    [c["method"] for c in cost],
    [(c["stored params, all"] or 0) / 1e6 for c in cost],
    color="tab:blue",
)
ax.invert_yaxis()
ax.set_xlabel("parameters stored after the last task (millions)")
ax.set_title(plots.title("What each method keeps", synthetic))
plt.show()
# %% [markdown]
# ## Conclusions

# %%
from cosam.claims import claims_markdown, judge_runs

by = {r["method"]: r for r in table}
seed_runs = {m: {int(r.meta["config"]["seed"]): r for r in recs} for m, recs in runs.items()}
n_seeds = len(nb.as_list(seeds))
parts = [
    f"Data: {label}.",
    "",
    f"### The paper's claims on this notebook's runs ({n_seeds} seed{'s' if n_seeds > 1 else ''})",
    "",
    claims_markdown(judge_runs(seed_runs)),
]
if sweep is not None:
    from cosam.report import load_run as _load

    sweep_runs = {}
    for row in sweep.per_seed:
        if row["order"] == order:
            sweep_runs.setdefault(row["method"], {})[int(row["seed"])] = _load(Path(row["run"]))
    verdicts = judge_runs(sweep_runs)
    if verdicts:
        parts += [
            f"### The same claims over the sweep's seeds (order `{order}`)",
            "",
            claims_markdown(verdicts),
        ]
lines = []
for b, m in pairs:
    d = 100 * (by[m]["last_iou"] - by[b]["last_iou"])
    n_t = len(first[m].matrix.tasks)
    lines.append(
        f"- {b} (seed {nb.as_list(seeds)[0]}): Last-IoU {100 * by[b]['last_iou']:.1f}% → "
        f"{100 * by[m]['last_iou']:.1f}% with MoDA ({d:+.1f} points); FF-IoU {100 * by[b]['ff_iou']:.1f} → "
        f"{100 * by[m]['ff_iou']:.1f} points; router accuracy {100 * (by[m]['router_acc'] or 0):.1f}%. "
        f"Cost: {(by[m]['stored_params_per_task'] or 0) / 1e6:.2f} M parameters and "
        f"{(by[m]['buffer_images'] or 0) // max(n_t, 1)} buffer images stored per task; "
        f"{(by[m]['train_s'] or 0) / max(n_t, 1):.0f} s of training and "
        f"{(by[m]['router_s'] or 0) / max(n_t, 1):.0f} s of router training per task, against "
        f"{(by[b]['train_s'] or 0) / max(n_t, 1):.0f} s of training for the base."
    )
for m, router in routed.items():
    final = router["final"]
    worst = min(final["per_task"], key=final["per_task"].get)
    conf = final["confusion"][worst]
    wrong = (
        max((c, final["adapters"][j]) for j, c in enumerate(conf) if final["adapters"][j] != worst)
        if len(conf) > 1
        else (0, "-")
    )
    if final["per_task"][worst] >= 1.0:  # no routing error: no "least accurate" domain to name
        lines.append(
            f"- {m}: the router sent every test image of the seen tasks to its own adapter."
        )
    else:
        lines.append(
            f"- {m}: the router is least accurate on {worst} "
            f"({100 * final['per_task'][worst]:.1f}%), whose images it sends most often to the "
            f"{wrong[1]} adapter ({wrong[0]} images)."
        )
display(Markdown("\n".join(parts) + "\n\n### Numbers of the first seed\n\n" + "\n".join(lines)))

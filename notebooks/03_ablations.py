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
# # 03 — MoDA ablations
#
# **Question: which parts of MoDA's router matter?** GFT alone vs GFT + GAT, the number of
# assistant tokens (0/1/4/9), trained vs the released random tokens, one-way vs the released full
# attention, linear vs cosine router, and the buffer size (1/5/10/20 images per task).
#
# None of these touches the adapters (each adapter trains on its own task from the base's
# initial state), and the router restarts from the same seeded values at every retraining, so
# `cosam.ablation.reroute` retrains only the router on the finished pool of one MoDA run and
# evaluates: the rows equal those of a full run with the same options (tested). `steps="last"`
# gives the final row (Last and the final router accuracy); `steps="all"` the whole matrix.
#
# What each variant changes (see 02 for how MoDA works):
#
# - **GFT only (k=0), k=1, k=4** against the default k=9: how many Global Assistant Tokens help
#   the Global Feature Token summarise the image. Fewer tokens: fewer parameters to fit on the
#   buffer, less capacity.
# - **random tokens, one-way**: the tokens keep their random initial values and only the router
#   trains, so the query is a fixed random read-out of the frozen encoder.
# - **random tokens, full attention (released)**: the released code's behaviour, where the
#   patches also read the tokens, so the tokens perturb the image features as well.
# - **cosine router**: the task keys are compared with the query by cosine similarity instead of
#   a trained linear layer.
# - **buffer 1/5/20**: how many training images per task the tokens and router see.
#
# A variant can move the router's task-id accuracy and Last-IoU in different directions: a routing
# mistake costs nothing when the chosen adapter happens to segment that image well, and much when
# it does not. These rows are one seed; read small differences as noise (02's sweep shows the
# seed-to-seed spread).

# %%
# %config InlineBackend.figure_format = 'png'
import time
from pathlib import Path

from IPython.display import Markdown, display

import cosam.notebook as nb
from cosam import plots
from cosam.report import markdown_table

plots.setup()
nb.begin(globals())

# %% tags=["parameters"]
profile = "cpu"
order = "paper"
seed = 0
method = "sequential_moda"  # the MoDA run whose pool is re-routed
steps = "last"  # last | all
variants = {
    "default: k=9, trained, one-way, linear, buffer 10": {},
    "GFT only (k=0)": {"n_gat": 0},
    "k=1": {"n_gat": 1},
    "k=4": {"n_gat": 4},
    "random tokens, one-way": {"train_tokens": False},
    "random tokens, full attention (released)": {"attention": "full", "train_tokens": False},
    "cosine router": {"router": "cosine"},
    "buffer 1": {"buffer_size": 1},
    "buffer 5": {"buffer_size": 5},
    "buffer 20": {"buffer_size": 20},
}
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
        "seed",
        "method",
        "steps",
        "variants",
        "backbone",
        "data_root",
        "results_dir",
        "cache_dir",
        "overrides",
    ],
)
params

# %%
from cosam.ablation import reroute
from cosam.io import write_csv
from cosam.report import data_label, load_run
from cosam.runner import Context, run

ctx = Context()
base_run = load_run(run(nb.config_for(params, method, int(seed)), ctx=ctx))
label = data_label([base_run])
synthetic = "SYNTHETIC" in label
report_dir = Path(results_dir) / profile / "reports"
rows = []
for _i, (name, options) in enumerate(variants.items()):
    t0 = time.perf_counter()
    r = reroute(base_run.path, options, steps=steps, ctx=ctx)
    rows.append(
        {
            "variant": name,
            "options": str(options),
            **{
                k: r["summary"].get(k)
                for k in ("router_accuracy", "last_iou", "last_biou", "avg_iou", "ff_iou")
            },
            "router_s": sum(r["router_seconds"]),
            "wall_s": time.perf_counter() - t0,
        }
    )
write_csv(report_dir / "03_ablations.csv", rows)
res = base_run.meta["resolved"]
display(
    Markdown(
        f"Data: **{label}**. `{method}`, backbone `{res['backbone']}` at {res['image_size']} px; "
        f"order {', '.join(res['order'])}; seed {seed}; profile `{profile}`; steps `{steps}`."
    )
)

# %% [markdown]
# ## Router accuracy and Last after the last task, per variant (%)

# %%
cols = (
    ["variant", "router_accuracy", "last_iou", "last_biou"]
    + (["avg_iou", "ff_iou"] if steps == "all" else [])
    + ["router_s", "wall_s"]
)
display(
    Markdown(
        markdown_table(
            rows, cols, pct=["router_accuracy", "last_iou", "last_biou", "avg_iou", "ff_iou"]
        )
    )
)
fig = plots.ablation_bars(rows, name=plots.title(f"{method}: router ablations", synthetic))
# %% [markdown]
# ## Conclusions

# %%
by = {r["variant"]: r for r in rows}
default = rows[0]
lines = [
    f"- Data: {label}.",
    f"- Default ({default['variant']}): router accuracy {100 * default['router_accuracy']:.1f}%, "
    f"Last-IoU {100 * default['last_iou']:.1f}%.",
]
best = max(rows, key=lambda r: r["router_accuracy"])
worst = min(rows, key=lambda r: r["router_accuracy"])
spread = 100 * (max(r["last_iou"] for r in rows) - min(r["last_iou"] for r in rows))
acc_spread = 100 * (best["router_accuracy"] - worst["router_accuracy"])
if spread < 0.05 and acc_spread < 0.05:  # every variant ties: nothing to rank
    lines.append(
        f"- Every variant ends with router accuracy {100 * default['router_accuracy']:.1f}% and "
        f"Last-IoU {100 * default['last_iou']:.1f}%: on these tasks the variants cannot be told "
        "apart (an ablation needs tasks the router can confuse)."
    )
else:
    lines.append(
        f"- Most accurate router: {best['variant']} ({100 * best['router_accuracy']:.1f}%); least: "
        f"{worst['variant']} ({100 * worst['router_accuracy']:.1f}%, "
        f"Last-IoU {100 * worst['last_iou']:.1f}%)."
    )
    lines.append(
        f"- Across variants Last-IoU spans {spread:.1f} points and router accuracy "
        f"{acc_spread:.1f} points."
    )
    opposite = [
        r["variant"]
        for r in rows[1:]
        if (r["router_accuracy"] - default["router_accuracy"])
        * (r["last_iou"] - default["last_iou"])
        < 0
    ]
    if opposite:
        lines.append(
            f"- In {len(opposite)} of {len(rows) - 1} variants router accuracy and Last-IoU move "
            f"in opposite directions against the default ({', '.join(opposite)}): router accuracy "
            "alone does not predict Last-IoU here."
        )
    for r in rows[1:]:
        lines.append(
            f"- {r['variant']}: router accuracy "
            f"{100 * (r['router_accuracy'] - default['router_accuracy']):+.1f} points, "
            f"Last-IoU {100 * (r['last_iou'] - default['last_iou']):+.1f} points vs the default."
        )
display(Markdown("\n".join(lines)))

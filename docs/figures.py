"""Draw the documentation's figures (SVG, in docs/_static/): the output-size rule and the
stride-phase decomposition, on one spatial dimension.

    pip install matplotlib && python docs/figures.py

The SVGs are committed; the documentation build does not run this script. The example is
the usual 2x upsampling layer: input size D = 4, kernel k = 3, stride s = 2, dilation 1,
padding 1 on each side, output_padding 1 (output size 2 * D = 8). Every position and tap
drawn comes from the formulas on the pages, computed below.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "_static")

D, K, S, DIL, LO, HI, OP = 4, 3, 2, 1, 1, 1, 1
FULL = (D - 1) * S + DIL * (K - 1) + 1                 # 9: the full result, no padding
OUT_SIZE = FULL - LO - HI + OP                         # 8
TAP_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c"]
PHASE_COLOURS = ["#dbe9f6", "#fde3cc"]

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "conv3dt", "font.size": 11,
                     "font.family": "DejaVu Sans"})


def cell(ax, x, y, text, face="white", edge="#333333", ls="-", w=0.9, h=0.9, **kw):
    ax.add_patch(Rectangle((x - w / 2, y - h / 2), w, h, facecolor=face, edgecolor=edge,
                           linestyle=ls, linewidth=1.2))
    ax.text(x, y, text, ha="center", va="center", **kw)


def link(ax, x0, y0, x1, y1, colour):
    ax.annotate("", xy=(x1, y1 + 0.45), xytext=(x0, y0 - 0.45),
                arrowprops=dict(arrowstyle="->", color=colour, lw=1.3, shrinkA=0, shrinkB=0))


def finish(fig, ax, name, width):
    ax.set_xlim(-3.2, width)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.savefig(os.path.join(OUT, name), bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    print(os.path.join(OUT, name))


def output_size_figure():
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    yi, yf, yo = 3.6, 1.6, -0.6
    ax.text(-3.1, yi, f"input x\nD = {D}", va="center")
    ax.text(-3.1, yf, f"full result\n{FULL} positions", va="center")
    ax.text(-3.1, yo, f"output y\nD' = {OUT_SIZE}", va="center")
    for i in range(D):
        cell(ax, i * S + 1, yi, f"x{i}")
        for t in range(K):
            link(ax, i * S + 1, yi, i * S + t * DIL, yf, TAP_COLOURS[t])
    for f in range(FULL):
        dropped = f < LO or f >= FULL - HI
        cell(ax, f, yf, str(f), face="#eeeeee" if dropped else "white",
             edge="#999999" if dropped else "#333333", color="#777777" if dropped else "k")
    for o in range(OUT_SIZE):
        f = o + LO
        extra = f >= FULL - HI
        cell(ax, f, yo, f"y{o}", face="#e3f1e0" if extra else "white")
    ax.annotate("pad_lo = 1\ncut off", xy=(0, yf - 0.5), xytext=(0, yo - 1.5), ha="center",
                arrowprops=dict(arrowstyle="->", color="#777777"), color="#555555")
    ax.annotate("pad_hi = 1\ncut off", xy=(FULL - 1 + 0.5, yf), xytext=(FULL + 0.4, yf),
                ha="left", va="center", arrowprops=dict(arrowstyle="->", color="#777777"),
                color="#555555")
    ax.annotate("output_padding = 1\nadds one back", xy=(FULL - 1 + 0.5, yo),
                xytext=(FULL + 0.4, yo), ha="left", va="center",
                arrowprops=dict(arrowstyle="->", color="#2ca02c"), color="#2a6b22")
    for t in range(K):
        ax.plot([], [], color=TAP_COLOURS[t], label=f"tap t = {t}")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 1.12), ncol=3, frameon=False)
    ax.text(FULL / 2, -3.0,
            f"D' = (D - 1) * s - pad_lo - pad_hi + d * (k - 1) + 1 + output_padding"
            f" = {D - 1} * {S} - {LO} - {HI} + {DIL} * {K - 1} + 1 + {OP} = {OUT_SIZE}",
            ha="center", family="DejaVu Sans Mono", fontsize=10)
    ax.text(FULL / 2, 5.0, f"input i reaches full position i * s + t * d, output "
            f"o = i * s + t * d - pad_lo  (k = {K}, s = {S}, d = {DIL})", ha="center",
            fontsize=10)
    ax.set_ylim(-3.7, 5.4)
    finish(fig, ax, "output_size.svg", FULL + 2.6)


def phases_figure():
    fig, ax = plt.subplots(figsize=(9.5, 5.0))
    yi, yo = 3.4, 0.6
    ax.text(-3.1, yi, "input x", va="center")
    ax.text(-3.1, yo, "output y\n(phase r)", va="center")
    # The scatter of the definition, coloured by tap, outputs by phase.
    for i in range(D):
        cell(ax, i * S + 1.5, yi, f"x{i}")
    for o in range(OUT_SIZE):
        r = (o + LO) % S
        cell(ax, o + 1, yo, f"y{o}", face=PHASE_COLOURS[r])
        ax.text(o + 1, yo - 0.75, f"r={r}", ha="center", fontsize=9, color="#555555")
    for i in range(D):
        for t in range(K):
            o = i * S + t * DIL - LO
            if 0 <= o < OUT_SIZE:
                link(ax, i * S + 1.5, yi, o + 1, yo, TAP_COLOURS[t])
    for t in range(K):
        ax.plot([], [], color=TAP_COLOURS[t], label=f"tap t = {t}")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 1.08), ncol=3, frameon=False)
    # Per phase: the taps with (t * d) mod s == r, reading the input on a dense grid.
    y = -1.4
    for r in range(S):
        taps = [t for t in range(K) if (t * DIL) % S == r]
        outs = [o for o in range(OUT_SIZE) if (o + LO) % S == r]
        terms = []
        for t in taps:
            shift = (t * DIL - r) // S            # o + lo = q * s + r reads x[q - shift]
            terms.append(f"w{t} * x[q{'-' + str(shift) if shift else ''}]")
        q0 = (outs[0] + LO - r) // S
        ax.add_patch(Rectangle((-0.5, y - 0.45), 0.6, 0.9, facecolor=PHASE_COLOURS[r],
                               edgecolor="#333333"))
        index = f"{S}q{r - LO:+d}" if r != LO else f"{S}q"
        ax.text(0.5, y, f"phase r = {r}: y[{index}] = " + " + ".join(terms)
                + f",  q = {q0}, ..., {q0 + len(outs) - 1}"
                + f"  (taps {taps}: dense, {len(taps)} tap{'s' if len(taps) > 1 else ''})",
                va="center", fontsize=10, family="DejaVu Sans Mono")
        y -= 1.1
    ax.text(OUT_SIZE / 2, 5.0, "The outputs split into s = 2 phases r = (o + pad_lo) mod s; "
            "phase r only sees taps with (t * d) mod s = r", ha="center", fontsize=10)
    ax.set_ylim(-3.2, 5.4)
    finish(fig, ax, "phases.svg", OUT_SIZE + 2.2)


if __name__ == "__main__":
    output_size_figure()
    phases_figure()

"""Draw the documentation's pictures from the real code, into docs/img/.

    python scripts/make_pictures.py            # all four
    python scripts/make_pictures.py --no-png   # the SVGs only (no Chromium needed)

- paths.svg: one small model per framework, drawn from `tw.paths(model, tw.arrays)`
  and `tw.path_segments`, next to the key path JAX itself gives each leaf.
- outermost.svg: "outermost wins", drawn from `tw.prewalk` (every node) and
  `tw.paths(..., outermost=True)` (the nodes `replace` calls `fn` on) on a small dict.
- mesh.svg: the shards `tw.materialize` creates on a (2, 4) mesh of 8 CPU devices,
  drawn from each leaf's `addressable_shards`.
- show.png: the notebook (HTML) rendering of `tw.show`, screenshotted in headless
  Chromium (Debian's `chromium` package).

The SVGs are deterministic: rerun after a change that shows in them, and commit them.
"""

import os

if __name__ == "__main__":
    # Eight CPU devices for the mesh picture; must be set before JAX is imported.
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import html  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import treewalk as tw  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "img"
FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"
INK, MUTED, ACCENT, LINE = "#1f2328", "#6e7781", "#3f51b5", "#c8ccd1"
# One colour per device (8 devices).
DEVICE_COLOURS = [
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072",
    "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
]  # fmt: skip
CHAR_W = 7.8  # width of one character at font-size 13


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def svg(width: float, height: float, body: list[str], title: str) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'font-family="{FONT}" font-size="13">',
            f"<title>{esc(title)}</title>",
            f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
            *body,
            "</svg>",
            "",
        ]
    )


def text(x, y, s, fill=INK, weight="normal", anchor="start", size=13) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" fill="{fill}" font-weight="{weight}" '
        f'text-anchor="{anchor}" font-size="{size}">{esc(s)}</text>'
    )


# ---------------------------------------------------------------- paths.svg


def framework_models() -> list[tuple[str, object]]:
    import equinox as eqx
    import flax.linen as nn
    import haiku as hk
    from flax import nnx

    class NNXNet(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(2, 3, rngs=rngs)
            self.l2 = nnx.Linear(3, 1, rngs=rngs)

    x = jnp.ones((1, 2))
    linen = nn.Sequential([nn.Dense(3), nn.Dense(1)])
    mlp = hk.transform(lambda x: hk.nets.MLP([3, 1])(x))
    return [
        ("Equinox  eqx.nn.MLP", eqx.nn.MLP(2, 1, 3, 1, key=jax.random.key(0))),
        ("Flax NNX  nnx.Module", NNXNet(nnx.Rngs(0))),
        ("Flax linen  params", linen.init(jax.random.key(0), x)),
        ("Haiku  params", mlp.init(jax.random.key(0), x)),
    ]


def draw_paths() -> str:
    panels = []
    for title, model in framework_models():
        rows = []  # (depth, label, is_leaf, note)
        seen: set[tuple] = set()
        for path, leaf in tw.select(model, tw.arrays):
            segs = tw.path_segments(path)
            for d in range(len(segs)):
                prefix = tuple(segs[: d + 1])
                if prefix in seen:
                    continue
                seen.add(prefix)
                last = d == len(segs) - 1
                note = str(tuple(leaf.shape)) if last else ""
                rows.append((d, str(segs[d]), last, note))
            jax_path = jax.tree_util.keystr(path)
            rows.append((len(segs), jax_path, None, ""))
        panels.append((title, rows))

    row_h, top, pad = 19, 48, 18
    cols = 2
    widths = []
    for title, rows in panels:
        w = max(len(title) * CHAR_W, *(18 * d + len(s) * CHAR_W + 70 for d, s, _, _ in rows))
        widths.append(w + 2 * pad)
    col_w = [max(widths[i::cols]) for i in range(cols)]
    heights = [top + len(rows) * row_h + 14 for _, rows in panels]
    row_hs = [max(heights[i : i + cols]) for i in range(0, len(panels), cols)]
    body = []
    for n, (title, rows) in enumerate(panels):
        x0 = sum(col_w[: n % cols])
        y0 = sum(row_hs[: n // cols])
        w, height = col_w[n % cols], row_hs[n // cols]
        body.append(
            f'<rect x="{x0 + 6:.1f}" y="{y0 + 6:.1f}" width="{w - 12:.1f}" '
            f'height="{height - 12:.1f}" rx="6" fill="#f6f8fa" stroke="{LINE}"/>'
        )
        body.append(text(x0 + pad, y0 + 28, title, weight="bold"))
        y = y0 + top
        last_at_depth: dict[int, float] = {}
        for depth, label, leaf, note in rows:
            x = x0 + pad + 18 * depth
            if leaf is None:  # JAX's own key path for the leaf above
                body.append(text(x - 18 + 4, y + 13, f"jax: {label}", fill=MUTED, size=11))
                y += row_h
                continue
            if depth > 0:
                px = x - 18 + 5
                py = last_at_depth.get(depth - 1, y)
                body.append(
                    f'<path d="M{px:.1f},{py + 4:.1f} V{y + 9:.1f} H{x - 3:.1f}" '
                    f'fill="none" stroke="{LINE}"/>'
                )
            colour = ACCENT if leaf else INK
            body.append(text(x, y + 13, label, fill=colour, weight="bold" if leaf else "normal"))
            if note:
                body.append(text(x + len(label) * CHAR_W + 10, y + 13, note, fill=MUTED, size=11))
            last_at_depth[depth] = y + 9
            y += row_h
    x0, height = sum(col_w), sum(row_hs)
    return svg(x0, height, body, "The paths treewalk gives each framework's parameters")


# ------------------------------------------------------------ outermost.svg

OUTERMOST_TREE = {
    "layer": {"w": jnp.ones(2), "b": jnp.ones(2)},
    "w": jnp.ones(2),
    "b": jnp.ones(2),
}
OUTERMOST_SELECTOR = tw.glob("layer") | "**/w"


def draw_outermost() -> str:
    nodes: list[tuple] = []

    def visit(path, node):
        nodes.append(tuple(tw.path_segments(path)))
        return node

    tw.prewalk(visit, OUTERMOST_TREE)
    hits = {
        tuple(tw.path_segments(p))
        for p in tw.paths(OUTERMOST_TREE, OUTERMOST_SELECTOR, outermost=True)
    }

    def status(segs):
        if segs in hits:
            return "hit"
        if any(segs[: len(h)] == h and len(segs) > len(h) for h in hits):
            return "not asked"
        return "asked"

    children: dict[tuple, list[tuple]] = {}
    for segs in nodes:
        if segs:
            children.setdefault(segs[:-1], []).append(segs)
    # Leaves left to right in traversal order; parents centred over their children.
    xs: dict[tuple, float] = {}
    step, x_next = 120.0, [70.0]

    def place(segs):
        kids = children.get(segs, [])
        for k in kids:
            place(k)
        if kids:
            xs[segs] = (xs[kids[0]] + xs[kids[-1]]) / 2
        else:
            xs[segs] = x_next[0]
            x_next[0] += step

    place(())
    depth = max(len(s) for s in nodes)
    width, level_h, top = x_next[0] - step + 70 + 190, 90, 60
    height = top + depth * level_h + 70
    call = f"tw.paths(tree, {OUTERMOST_SELECTOR!r}, outermost=True)"
    body = [text(20, 28, call, weight="bold")]
    for segs in nodes:
        if segs:
            parent = segs[:-1]
            body.append(
                f'<line x1="{xs[parent]:.1f}" y1="{top + len(parent) * level_h + 16:.1f}" '
                f'x2="{xs[segs]:.1f}" y2="{top + len(segs) * level_h - 16:.1f}" stroke="{LINE}" '
                'stroke-width="1.5"/>'
            )
    style = {
        "hit": (ACCENT, "#ffffff", ACCENT, ""),
        "asked": ("#ffffff", INK, INK, ""),
        "not asked": ("#f6f8fa", MUTED, LINE, ' stroke-dasharray="4 3"'),
    }
    for order, segs in enumerate(nodes):
        fill, ink, stroke, dash = style[status(segs)]
        label = segs[-1] if segs else "root ()"
        w = max(56, len(str(label)) * CHAR_W + 22)
        x, y = xs[segs], top + len(segs) * level_h
        body.append(
            f'<rect x="{x - w / 2:.1f}" y="{y - 16:.1f}" width="{w:.1f}" height="32" rx="16" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
        )
        body.append(text(x, y + 4.5, label, fill=ink, anchor="middle", weight="bold"))
        body.append(text(x + w / 2 + 3, y - 12, str(order + 1), fill=MUTED, size=10))
    # Legend.
    lx, ly = width - 180, top - 8
    for i, (name, say) in enumerate(
        [("hit", "hit: fn runs here"), ("asked", "asked, no match"), ("not asked", "inside a hit")]
    ):
        fill, _, stroke, dash = style[name]
        y = ly + i * 26
        body.append(
            f'<rect x="{lx:.1f}" y="{y:.1f}" width="26" height="16" rx="8" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"{dash}/>'
        )
        body.append(text(lx + 34, y + 12, say, size=12))
    body.append(
        text(20, height - 18, "numbers: the pre-order in which the flatten meets each node",
             fill=MUTED, size=11)
    )  # fmt: skip
    return svg(width, height, body, "Outermost wins")


# ----------------------------------------------------------------- mesh.svg


def materialized_model():
    import equinox as eqx
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == 8, "needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    abstract = eqx.filter_eval_shape(eqx.nn.MLP, 8, 4, 16, 1, key=jax.random.key(0))
    plan = {"**/weight": P("model", "data"), "**/bias": P("model")}
    init = {
        "**/bias": tw.zeros,
        "**/weight": tw.initializer(jax.nn.initializers.lecun_normal()),
    }
    model = tw.materialize(abstract, init, key=jax.random.key(1), plan=plan, mesh=mesh)
    return mesh, plan, model


def draw_mesh() -> str:
    mesh, plan, model = materialized_model()
    cell, gap, left, top = 15.0, 46.0, 24.0, 200.0
    body = [
        text(left, 28, "tw.materialize(abstract, init, key=..., plan=plan, mesh=mesh)",
             weight="bold"),
        text(left, 48, f"mesh: {dict(mesh.shape)}   plan: {plan}", fill=MUTED, size=12),
    ]  # fmt: skip
    # The mesh itself: device ids laid out on ("data", "model").
    body.append(text(left, 76, "devices on the mesh", size=12))
    for (i, j), dev in zip(
        [(i, j) for i in range(mesh.shape["data"]) for j in range(mesh.shape["model"])],
        mesh.devices.flat,
        strict=True,
    ):
        x, y = left + j * 30, 84 + i * 26
        body.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="28" height="24" '
            f'fill="{DEVICE_COLOURS[dev.id]}" stroke="{INK}" stroke-width="0.5"/>'
        )
        body.append(text(x + 14, y + 16, dev.id, anchor="middle", size=12))
    body.append(text(left, 152, "model → (columns), data ↓ (rows)", fill=MUTED, size=11))

    x = left
    bottom = top
    for path, leaf in tw.select(model, tw.arrays):
        shape = leaf.shape if leaf.ndim == 2 else (leaf.shape[0], 1)
        # A vector is drawn as a column, wide enough for its labels.
        cw = cell if leaf.ndim == 2 else 34.0
        h, w = shape[0] * cell, shape[1] * cw
        label = f"{tw.path_str(path)} {tuple(leaf.shape)}"
        spec = leaf.sharding.spec
        body.append(text(x, top - 24, label, size=12, weight="bold"))
        body.append(text(x, top - 8, f"P{tuple(spec)}", fill=MUTED, size=11))
        by_block: dict[tuple, list[int]] = {}
        for shard in leaf.addressable_shards:
            idx = shard.index if leaf.ndim == 2 else (shard.index[0], slice(0, 1))
            key = tuple((s.start or 0, s.stop if s.stop is not None else n)
                        for s, n in zip(idx, shape, strict=True))  # fmt: skip
            by_block.setdefault(key, []).append(shard.device.id)
        for ((r0, r1), (c0, c1)), devices in sorted(by_block.items()):
            devices.sort()
            bx, by = x + c0 * cw, top + r0 * cell
            bw, bh = (c1 - c0) * cw, (r1 - r0) * cell
            colours = [DEVICE_COLOURS[d] for d in devices]
            # A block held by several devices (replicated): one stripe per device.
            for k, colour in enumerate(colours):
                body.append(
                    f'<rect x="{bx + k * bw / len(colours):.1f}" y="{by:.1f}" '
                    f'width="{bw / len(colours):.1f}" height="{bh:.1f}" fill="{colour}"/>'
                )
            body.append(
                f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
                f'fill="none" stroke="{INK}" stroke-width="0.75"/>'
            )
            body.append(
                text(bx + bw / 2, by + bh / 2 + 4, ",".join(map(str, devices)),
                     anchor="middle", size=11)
            )  # fmt: skip
        x += max(w, len(label) * 7.2) + gap
        bottom = max(bottom, top + h)
    note = (
        "each block: the devices that hold that shard (several = replicated); "
        "from leaf.addressable_shards on 8 CPU devices"
    )
    body.append(text(left, bottom + 30, note, fill=MUTED, size=11))
    return svg(x - gap + left, bottom + 48, body, "Shards created by tw.materialize")


# ----------------------------------------------------------------- show.png


def show_html() -> str:
    import equinox as eqx

    mlp = eqx.nn.MLP(in_size=4, out_size=2, width_size=8, depth=2, key=jax.random.key(1))
    table = tw.show(mlp, "**/bias")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><style>"
        "body{margin:16px;font-family:system-ui,-apple-system,'Segoe UI',Roboto,"
        "'DejaVu Sans',sans-serif;font-size:14px;background:#fff}"
        "</style></head><body>" + table._repr_html_() + "</body></html>"
    )


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if exe := shutil.which(name):
            return exe
    return None


def screenshot(url: str, out: Path, width: int, height: int) -> None:
    exe = chromium()
    if exe is None:
        raise SystemExit("no chromium: apt-get install -y chromium (or pass --no-png)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-png", action="store_true", help="skip the Chromium screenshot")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in [
        ("paths.svg", draw_paths),
        ("outermost.svg", draw_outermost),
        ("mesh.svg", draw_mesh),
    ]:
        (args.out / name).write_text(draw())
        print("wrote", args.out / name)
    if not args.no_png:
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "show.html"
            page.write_text(show_html())
            screenshot(page.as_uri(), args.out / "show.png", 540, 250)
        print("wrote", args.out / "show.png")


if __name__ == "__main__":
    main()

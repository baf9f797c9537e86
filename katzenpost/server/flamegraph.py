"""Collapsed stacks ("thread;frame;frame count" lines, the input format of the common flame-graph
tools) and a small self-contained SVG flame graph drawn from them.

Pure functions on a {stack tuple: samples} mapping: no I/O, no threads. The SVG is static (a
tooltip per frame, no script), its size bounded by drawing only frames wider than a minimum.
"""
import html
import zlib

WIDTH = 1200            # px of the drawing
ROW = 16                # px per stack level
MIN_WIDTH = 0.5         # px: narrower frames are not drawn (bounds the file whatever the input)
FONT = 11               # px
CHAR_WIDTH = 6.5        # px per character at FONT, to fit labels into their boxes


def collapsed_lines(stacks):
    """'frame;frame;... count' lines, most samples first. `stacks`: {tuple of labels: samples}.
    A ';' or a line break inside a label would split it, so they are replaced."""
    lines = []
    for stack, count in sorted(stacks.items(), key=lambda item: (-item[1], item[0])):
        lines.append(";".join(_clean(label) for label in stack) + f" {count}")
    return lines


def _clean(label):
    return label.replace(";", ":").replace("\n", " ").replace("\r", " ")


def _tree(stacks):
    """Nested {label: [samples, children]} merged on common prefixes."""
    root = [0, {}]
    for stack, count in stacks.items():
        node = root
        node[0] += count
        for label in stack:
            node = node[1].setdefault(label, [0, {}])
            node[0] += count
    return root


def render_svg(stacks, title):
    """A flame graph of `stacks` ({tuple of labels: samples}) as an SVG document (str). The
    root of each stack is at the bottom, as in the usual flame graphs."""
    root = _tree(stacks)
    total = root[0]
    boxes = []
    depth = _layout(root, 0.0, 0, total, boxes)
    height = (depth + 3) * ROW
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="monospace" font-size="{FONT}">',
           f'<rect width="100%" height="100%" fill="#f8f8f8"/>',
           f'<text x="{WIDTH / 2}" y="{ROW}" text-anchor="middle" font-size="{FONT + 3}">'
           f'{html.escape(title)} ({total} samples)</text>']
    for label, count, x, level, width in boxes:
        y = height - (level + 1) * ROW
        share = 100.0 * count / total
        tip = html.escape(f"{label} ({count} samples, {share:.2f}%)")
        out.append(f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" '
                   f'height="{ROW - 1}" fill="{_colour(label)}" rx="2"/>')
        chars = int((width - 4) / CHAR_WIDTH)
        if chars >= 3:
            text = label if len(label) <= chars else label[:chars - 2] + ".."
            out.append(f'<text x="{x + 2:.1f}" y="{y + ROW - 4}">{html.escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _layout(node, x, level, total, boxes):
    """Append (label, samples, x, level, width) of each child of `node` wide enough to draw;
    returns the deepest level drawn."""
    deepest = level
    for label, child in sorted(node[1].items()):
        width = WIDTH * child[0] / total if total else 0.0
        if width >= MIN_WIDTH:
            boxes.append((label, child[0], x, level, width))
            deepest = max(deepest, _layout(child, x, level + 1, total, boxes))
        x += width
    return deepest


def _colour(label):
    """A warm colour that stays the same for the same label across graphs."""
    h = zlib.crc32(label.encode("utf-8", "replace"))
    return f"rgb({205 + h % 50},{(h >> 8) % 180 + 40},{(h >> 16) % 55})"

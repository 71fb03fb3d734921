"""Fit the ```python blocks of Markdown files into 78 columns.

    python scripts/fit_code_blocks.py docs/checkpoints.md [more.md ...]

Only blocks with a line over 78 columns are touched: a trailing comment on a long line
moves onto its own line above (it explains the line), then `ruff format
--line-length 78` lays the block out. Read the diff afterwards: a long string or a long
comment ruff cannot split still needs a hand. tests/test_docs.py checks the width.
"""

import io
import re
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

WIDTH = 78
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*$")


def comments_above(lines: list[str]) -> list[str]:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline))
    except (tokenize.TokenError, SyntaxError):
        return lines
    trailing = {
        t.start[0] - 1: t.start[1]
        for t in tokens
        if t.type == tokenize.COMMENT and lines[t.start[0] - 1][: t.start[1]].strip()
    }
    out = []
    for i, line in enumerate(lines):
        if len(line) > WIDTH and i in trailing:
            col = trailing[i]
            indent = " " * (len(line) - len(line.lstrip()))
            comment = line[col:].lstrip("# ").rstrip()
            comment = comment[:1].upper() + comment[1:]
            out += [indent + "# " + c for c in textwrap.wrap(comment, WIDTH - len(indent) - 2)]
            out.append(line[:col].rstrip())
        else:
            out.append(line)
    return out


def fit(body: list[str]) -> list[str]:
    if max((len(line) for line in body), default=0) <= WIDTH:
        return body
    body = comments_above(body)
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--line-length", str(WIDTH), "-"],
        input="\n".join(body) + "\n",
        capture_output=True,
        text=True,
    )
    return proc.stdout.rstrip("\n").split("\n") if proc.returncode == 0 else body


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        lines, out, i = path.read_text().split("\n"), [], 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not (m and m["lang"] == "python"):
                out.append(lines[i])
                i += 1
                continue
            indent, j = m["indent"], i + 1
            while lines[j].strip() != "```":
                j += 1
            body = [s[len(indent) :] if s.startswith(indent) else s for s in lines[i + 1 : j]]
            out += [lines[i], *[indent + s if s else s for s in fit(body)], lines[j]]
            i = j + 1
        path.write_text("\n".join(out))


if __name__ == "__main__":
    main()

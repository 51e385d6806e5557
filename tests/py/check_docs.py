"""check_docs.py KD SOURCE_DIR — every kd command shown in README.md and docs/*.md
names a real command, and every option it uses is one that command's --help
documents. Exit status 1 (with one line per problem) when any does not.

Commands are read from fenced code blocks marked sh, bash, console or shell:
backslash continuations are joined, a leading "$ " prompt and trailing
comments are dropped, and a command is the word after a token whose base name
is "kd" (so `mpirun -np 4 kd train` and `build/kd run` count). For kd teacher,
tokenizer and import the next word is the subcommand, as for `kd quantize eval`."""
import glob
import os
import re
import shlex
import subprocess
import sys

kd, src = sys.argv[1], sys.argv[2]
SUBS = {"teacher", "tokenizer", "import"}
helps = {}


def help_text(words):
    key = tuple(words)
    if key not in helps:
        p = subprocess.run([kd, *words, "--help"], capture_output=True, text=True)
        helps[key] = p.stdout + p.stderr if p.returncode == 0 else None
    return helps[key]


def commands(path):
    """(line number, tokens) of every shell line in a fenced sh/bash block."""
    out, block, buf, start = [], False, "", 0
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        s = line.rstrip("\n")
        if s.lstrip().startswith("```"):
            lang = s.strip()[3:].strip()
            block = (not block) and lang in ("sh", "bash", "console", "shell")
            continue
        if not block:
            continue
        if not buf:
            start = n
        buf += s.rstrip("\\").lstrip() + " " if s.endswith("\\") else s.lstrip()
        if s.endswith("\\"):
            continue
        text, buf = buf, ""
        if text.startswith("$ "):
            text = text[2:]
        try:
            toks = shlex.split(text, comments=True)
        except ValueError as e:
            out.append((start, None, f"cannot parse: {e}"))
            continue
        out.append((start, toks, None))
    return out


problems, checked = [], 0
files = [os.path.join(src, "README.md")] + sorted(glob.glob(os.path.join(src, "docs", "*.md")))
for path in files:
    rel = os.path.relpath(path, src)
    for line, toks, err in commands(path):
        if err:
            problems.append(f"{rel}:{line}: {err}")
            continue
        for i, t in enumerate(toks):
            if os.path.basename(t) != "kd" or i + 1 >= len(toks):
                continue
            words = [toks[i + 1]]
            if words[0].startswith(("-", "<")):   # kd --help, kd --version, kd <command>
                continue
            rest = toks[i + 2:]
            if rest and not rest[0].startswith("-") and (words[0] in SUBS or (words[0], rest[0]) == ("quantize", "eval")):
                words.append(rest[0])
                rest = rest[1:]
            h = help_text(words)
            checked += 1
            if h is None:
                problems.append(f"{rel}:{line}: 'kd {' '.join(words)}' is not a kd command")
                continue
            for r in rest:
                if r in ("|", "&&", "||", ";", ">", "2>", "&") or r.startswith((">", "2>", "<")):
                    break                           # the kd command ends here
                if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", r):
                    opt = r.split("=")[0]
                    if not re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", h):
                        problems.append(f"{rel}:{line}: 'kd {' '.join(words)}' has no option {opt} (see its --help)")
for p in problems:
    print(p)
print(f"check_docs: {checked} kd commands in {len(files)} files, {len(problems)} problems")
sys.exit(1 if problems else 0)

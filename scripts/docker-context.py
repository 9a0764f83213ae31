#!/usr/bin/env python3
"""Stage the Dockerfile's build stage the way `docker build` would see it, without Docker.

There is no Docker engine on the CI machines, so CI cannot run `docker build`. This script
reproduces the two things that can break an image build without breaking `cargo build` in the
checkout:

1. the build context: the repository's files minus `.dockerignore` (last matching pattern
   wins, `!` re-includes, a pattern that matches a directory matches everything below it);
2. the build stage's `COPY` instructions (sources from the context, copied into the stage's
   `WORKDIR`; a directory source copies its contents, as Docker does).

Usage: docker-context.py STAGE_DIR  -> prints the build stage's `cargo build ...` command.
The caller runs that command inside STAGE_DIR (scripts/build-release.sh does).
"""

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def context_files():
    """Files `docker build .` would send: tracked and untracked-but-not-gitignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode()
    return sorted({p for p in out.split("\0") if p and os.path.isfile(os.path.join(REPO, p))})


def read_dockerignore():
    path = os.path.join(REPO, ".dockerignore")
    patterns = []
    if not os.path.exists(path):
        return patterns
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pat = os.path.normpath(line[1:] if negate else line).lstrip("/")
            patterns.append((negate, pattern_regex(pat)))
    return patterns


def pattern_regex(pat):
    """Docker's pattern syntax: `*` and `?` stay within a path element, `**` crosses them."""
    out = []
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole directories
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif pat[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pat[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pat[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def excluded(path, patterns):
    # A pattern that matches a parent directory matches the file too.
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negate, rx in patterns:
        if any(rx.match(p) for p in prefixes):
            verdict = not negate
    return verdict


def build_stage_lines():
    """The logical lines (continuations joined) of the Dockerfile's first stage."""
    with open(os.path.join(REPO, "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    logical, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.endswith("\\"):
            current += raw[:-1] + " "
            continue
        current += raw
        if current.strip():
            logical.append(current.strip())
        current = ""
    stage, seen_from = [], 0
    for line in logical:
        if line.upper().startswith("FROM "):
            seen_from += 1
            if seen_from > 1:
                break
            continue
        if seen_from == 1:
            stage.append(line)
    return stage


def copy_into_stage(sources, dest, files, stage_dir):
    dest_is_dir = dest.endswith("/") or len(sources) > 1
    dest_path = os.path.normpath(os.path.join(stage_dir, dest))
    copied = 0
    for src in sources:
        src = os.path.normpath(src)
        below = [p for p in files if p.startswith(src + "/")]
        if src in files:
            target = os.path.join(dest_path, os.path.basename(src)) if dest_is_dir else dest_path
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(REPO, src), target)
            copied += 1
        elif below:
            for p in below:  # a directory copies its contents, not itself
                target = os.path.join(dest_path, os.path.relpath(p, src))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(os.path.join(REPO, p), target)
                copied += 1
        else:
            sys.exit(f"docker-context: COPY {src}: not in the build context (.dockerignore?)")
    return copied


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: docker-context.py STAGE_DIR")
    stage_dir = sys.argv[1]
    patterns = read_dockerignore()
    files = [p for p in context_files() if not excluded(p, patterns)]
    workdir, command = "/", None
    for line in build_stage_lines():
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "WORKDIR":
            workdir = rest.strip()
        elif word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            if any(a.startswith("--from") for a in shlex.split(rest)):
                continue
            dest = args[-1]
            if not dest.startswith("/"):
                dest = workdir.rstrip("/") + "/" + dest
            # Stage paths are relative to the stage dir standing for the image's root +
            # WORKDIR, so strip the WORKDIR prefix.
            rel = os.path.relpath(os.path.normpath(dest), os.path.normpath(workdir))
            rel = rel + ("/" if dest.endswith("/") else "")
            copy_into_stage(args[:-1], rel, files, stage_dir)
        elif word == "RUN":
            body = " ".join(a for a in rest.split() if not a.startswith("--mount="))
            m = re.search(r"(cargo build[^&;]*)", body)
            if m:
                command = m.group(1).strip()
    if command is None:
        sys.exit("docker-context: no `cargo build` RUN in the Dockerfile's build stage")
    print(command)


if __name__ == "__main__":
    main()

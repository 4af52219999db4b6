#!/usr/bin/env python3
"""Copies the Docker build context: the repository less what .dockerignore excludes.

    context.py REPO DEST

`docker build .` sends the repository minus the `.dockerignore` matches; with
no Docker engine here, `check.sh` builds from this copy instead, so a file the
build needs but `.dockerignore` drops fails here as it would in `docker build`.

The rules are Docker's: one pattern a line, `#` comments, Go `filepath.Match`
syntax plus `**` (any number of directories), a leading `!` re-includes, the
last matching line wins, and a pattern matching a directory covers everything
under it. DEST is made to hold exactly the context (files no longer in the
context are removed), and files whose size and time did not change are not
copied again, so cargo's cache of the copy stays warm.
"""

import os
import re
import shutil
import sys


def rules(path):
    """The (negated, regex, literal prefix) list of a .dockerignore file."""
    out = []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:].strip()
        line = os.path.normpath(line).lstrip("/")
        prefix = re.split(r"[*?\[]", line, maxsplit=1)[0]
        out.append((negated, re.compile(translate(line)), prefix))
    return out


def translate(pattern):
    """A Docker ignore pattern as a regex matching a path and everything under it."""
    regex, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            # `**/` matches zero or more directories; a trailing `**` everything.
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            else:
                regex += ".*"
                i += 2
            continue
        if c == "*":
            regex += "[^/]*"
        elif c == "?":
            regex += "[^/]"
        elif c == "[":
            end = pattern.find("]", i)
            if end < 0:
                regex += re.escape(c)
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                regex += "[" + body + "]"
                i = end
        else:
            regex += re.escape(c)
        i += 1
    return "^" + regex + "(?:/.*)?$"


def excluded(relative, patterns):
    verdict = False
    for negated, regex, _ in patterns:
        if regex.match(relative):
            verdict = not negated
    return verdict


def may_reinclude(directory, patterns):
    """Whether a `!` pattern could match something under an excluded directory."""
    inside = directory + "/"
    return any(
        negated and (prefix.startswith(inside) or inside.startswith(prefix))
        for negated, _, prefix in patterns
    )


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: context.py REPO DEST")
    repo, dest = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    patterns = rules(os.path.join(repo, ".dockerignore"))
    wanted = set()
    for root, dirs, files in os.walk(repo):
        relative_root = os.path.relpath(root, repo)
        if os.path.abspath(root) == dest:
            dirs[:] = []
            continue
        for name in files:
            relative = os.path.normpath(os.path.join(relative_root, name))
            if not excluded(relative, patterns):
                wanted.add(relative)
        # A directory is skipped only when nothing under it can be re-included.
        kept = []
        for name in dirs:
            relative = os.path.normpath(os.path.join(relative_root, name))
            if os.path.abspath(os.path.join(root, name)) == dest:
                continue
            if excluded(relative, patterns) and not may_reinclude(relative, patterns):
                continue
            kept.append(name)
        dirs[:] = kept
    os.makedirs(dest, exist_ok=True)
    for relative in sorted(wanted):
        source, target = os.path.join(repo, relative), os.path.join(dest, relative)
        info = os.stat(source)
        try:
            have = os.stat(target)
            if have.st_size == info.st_size and int(have.st_mtime) == int(info.st_mtime):
                continue
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
    for root, dirs, files in os.walk(dest, topdown=False):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), dest)
            if relative not in wanted and not relative.startswith("target/"):
                os.remove(os.path.join(root, name))
        if root != dest and not os.listdir(root):
            os.rmdir(root)
    print(f"context: {len(wanted)} files")


if __name__ == "__main__":
    main()

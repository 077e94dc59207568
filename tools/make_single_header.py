#!/usr/bin/env python3
"""Writes single_include/convmat/convmat.hpp: convmat in one header.

Also single_include/convmat/npy.hpp, the .npy reader, which stands outside
the umbrella (it reads and writes files) and is generated the same way.

Starting from the umbrella include/convmat/convmat.hpp, every
`#include "..."` of a convmat header is replaced by that header's text, the
first time it is met (depth first, so each header comes after everything it
includes); later includes of the same header are dropped. Includes in angle
brackets (the standard library, Eigen, <omp.h>, ...) stay where they are; at
file scope (outside any #if) a repeated one is dropped. The output depends on
nothing but the headers, so it is byte-for-byte reproducible.

Usage:
  python3 tools/make_single_header.py              # rewrite the checked-in files
  python3 tools/make_single_header.py --check      # exit 1 if one is out of date
  python3 tools/make_single_header.py --output DIR # write them somewhere else
"""

import argparse
import difflib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE_DIR = ROOT / "include"
OUTPUT_DIR = ROOT / "single_include"
# Each single header: its root under include/ (written to the same path
# under single_include/), and what it holds.
SINGLE_HEADERS = (
    ("convmat/convmat.hpp", "the matrix of a convolution layer, in one header",
     "It holds include/convmat/convmat.hpp with every convmat header inlined\n"
     "once, in dependency order; it needs only Eigen 3.4+ and C++17."),
    ("convmat/npy.hpp", "NumPy's .npy files, in one header",
     "It holds include/convmat/npy.hpp, which stands outside the umbrella\n"
     "convmat.hpp (it reads and writes files); it needs only Eigen 3.4+ and C++17."),
)
COMMAND = "python3 tools/make_single_header.py"

LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
SYSTEM_INCLUDE = re.compile(r"^\s*#\s*include\s*<([^>]+)>")
PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\b")
OPENS_CONDITION = re.compile(r"^\s*#\s*if(n?def)?\b")
CLOSES_CONDITION = re.compile(r"^\s*#\s*endif\b")
# Each header opens with these two lines; the banner says them once.
FILE_BOILERPLATE = (
    "// convmat — the matrix of a convolution layer.",
    "// SPDX-License-Identifier: MIT",
)


class Error(Exception):
    pass


def version():
    text = (INCLUDE_DIR / "convmat" / "config.hpp").read_text(encoding="utf-8")
    match = re.search(r'^#define CONVMAT_VERSION_STRING "([^"]+)"', text, re.M)
    if not match:
        raise Error("include/convmat/config.hpp does not define CONVMAT_VERSION_STRING")
    return match.group(1)


def name_of(path):
    """The path as a user would include it: convmat/detail/geometry.hpp."""
    return path.relative_to(INCLUDE_DIR).as_posix()


def banner(title):
    """A rule that marks where a header's text begins or resumes."""
    return f"// ---- {title} " + "-" * max(3, 72 - len(title))


class Amalgamation:
    def __init__(self):
        self.lines = []
        self.inlined = set()        # headers already in self.lines
        self.system_includes = set()  # <...> already included at file scope
        self.pending = None           # a "(continued)" banner not yet needed

    def append(self, line):
        blank = not line.strip()
        if self.pending is not None:
            if blank:
                return  # no blank lines between two inlined headers
            self.section(self.pending)
            self.pending = None
        if blank and self.lines and not self.lines[-1].strip():
            return  # one blank line at most
        self.lines.append(line)

    def section(self, rule):
        """Starts a section: a blank line, then the rule."""
        if self.lines and self.lines[-1].strip():
            self.lines.append("")
        self.lines.append(rule)

    def inline(self, path, stack):
        if path in stack:
            cycle = " -> ".join(name_of(p) for p in stack + [path])
            raise Error(f"include cycle: {cycle}")
        self.inlined.add(path)
        self.pending = None
        self.section(banner(name_of(path)))
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if lines[:len(FILE_BOILERPLATE)] == list(FILE_BOILERPLATE):
            del lines[:len(FILE_BOILERPLATE)]
            if lines and lines[0] == "//":
                lines.pop(0)
        depth = 0  # #if nesting inside this header
        for number, line in enumerate(lines, start=1):
            if OPENS_CONDITION.match(line):
                depth += 1
            elif CLOSES_CONDITION.match(line):
                depth -= 1
            if PRAGMA_ONCE.match(line):
                continue
            local = LOCAL_INCLUDE.match(line)
            if local:
                target = (path.parent / local.group(1)).resolve()
                where = f"{name_of(path)}:{number}"
                if INCLUDE_DIR not in target.parents or not target.is_file():
                    raise Error(f'{where}: #include "{local.group(1)}" is not a header under include/')
                if depth != 0:
                    raise Error(f'{where}: #include "{local.group(1)}" inside #if cannot be inlined once; '
                                "include it unconditionally")
                if target not in self.inlined:
                    self.inline(target, stack + [path])
                    # Said only if more of this header follows.
                    self.pending = banner(f"{name_of(path)} (continued)")
                continue
            system = SYSTEM_INCLUDE.match(line)
            if system and depth == 0:
                if system.group(1) in self.system_includes:
                    continue
                self.system_includes.add(system.group(1))
            self.append(line)
        if depth != 0:
            raise Error(f"{name_of(path)}: unbalanced #if/#endif")


def generate(root, title, contents):
    amalgamation = Amalgamation()
    # The root header itself comes first: its includes pull in the rest.
    amalgamation.inline((INCLUDE_DIR / root).resolve(), [])
    header = [
        f"// convmat {version()} — {title}.",
        "// SPDX-License-Identifier: MIT",
        "//",
        "// GENERATED FILE — DO NOT EDIT. Edit the headers under include/convmat/ and",
        "// regenerate it from the repository's root with:",
        f"//   {COMMAND}",
        *(f"// {line}" for line in contents.split("\n")),
        "#pragma once",
        "",
    ]
    return "\n".join(header + amalgamation.lines) + "\n"


def check(path, text):
    """0 if `path` holds `text`, else 1 after printing the start of the diff."""
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    if current == text:
        print(f"{path} is up to date")
        return 0
    diff = list(difflib.unified_diff(current.split("\n"), text.split("\n"),
                                     "checked in", "regenerated", n=1, lineterm=""))
    print("\n".join(diff[:60] + (["..."] if len(diff) > 60 else [])))
    print(f"\n{path} is out of date: regenerate it with\n  {COMMAND}", file=sys.stderr)
    return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the checked-in file instead of writing it")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT_DIR,
                        help="the folder to write them to (default: single_include/)")
    args = parser.parse_args()
    status = 0
    for root, title, contents in SINGLE_HEADERS:
        try:
            text = generate(root, title, contents)
        except Error as error:
            print(f"make_single_header: {error}", file=sys.stderr)
            return 2
        path = args.output / root
        if args.check:
            status = max(status, check(path, text))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())

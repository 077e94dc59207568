#!/usr/bin/env python3
"""Checks that README.md shows the consumer projects' files verbatim.

A snippet in README.md is a fenced code block right after a marker naming the
file it must equal:

    <!-- snippet: tests/consumers/find_package/CMakeLists.txt -->
    ```cmake
    ...the file, byte for byte...
    ```

The consumer tests build and run those files, so every snippet marked this way
is compiled by a test. Fails if a snippet differs from its file, if a marker
names a missing file or has no code block after it, or if one of the files
given on the command line has no snippet.

Usage: check_readme_snippets.py REPO_ROOT FILE...   (FILE relative to REPO_ROOT)
"""

import difflib
import pathlib
import re
import sys

MARKER = re.compile(r"^<!-- snippet: (\S+) -->$")
FENCE = re.compile(r"^```")


def snippets(readme_lines):
    """Yields (line number of the marker, path, code block text)."""
    for index, line in enumerate(readme_lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        number = index + 1
        if index + 1 >= len(readme_lines) or not FENCE.match(readme_lines[index + 1]):
            yield number, marker.group(1), None
            continue
        end = index + 2
        while end < len(readme_lines) and not FENCE.match(readme_lines[end]):
            end += 1
        if end == len(readme_lines):
            yield number, marker.group(1), None
            continue
        block = readme_lines[index + 2:end]
        yield number, marker.group(1), "".join(line + "\n" for line in block)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = pathlib.Path(argv[1])
    required = set(argv[2:])
    readme = root / "README.md"
    lines = readme.read_text(encoding="utf-8").split("\n")
    errors = []
    seen = set()
    for number, path, block in snippets(lines):
        where = f"README.md:{number}"
        seen.add(path)
        file = root / path
        if block is None:
            errors.append(f"{where}: the marker for {path} is not followed by a ``` code block")
        elif not file.is_file():
            errors.append(f"{where}: {path} does not exist")
        else:
            text = file.read_text(encoding="utf-8")
            if block != text:
                diff = difflib.unified_diff(text.split("\n"), block.split("\n"), path, where, lineterm="")
                errors.append(f"{where}: the snippet differs from {path} (copy the file into the README):\n"
                              + "\n".join(diff))
    for path in sorted(required - seen):
        errors.append(f"README.md has no snippet of {path} (add '<!-- snippet: {path} -->' and the file in a code block)")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print(f"README.md: {len(seen)} snippets, each the same as the file a consumer test builds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

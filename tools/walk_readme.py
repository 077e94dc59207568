#!/usr/bin/env python3
"""Walks README.md as a newcomer does: its commands, in order, from the paths it gives.

Each code block after a marker is run in one scratch directory that holds a
link to every top-level entry of the repository (so `tests/data/...`,
`examples/...` and `build/demo/...` resolve as in a clone) and where every
file the commands write lands. HOME is a fresh directory there, so the
README's install line (`--prefix "$HOME/.local"`) installs into a temporary
prefix, whose bin/ comes first on PATH: a bare `convmat` is the installed one.

    <!-- walkthrough: run -->             a shell block: run with bash -e, must succeed
    <!-- walkthrough: python -->          a Python block: run with /usr/bin/python3, must succeed
    <!-- walkthrough: python prints X --> ... and print exactly X
    <!-- walkthrough: output -->          lines `$ command` followed by what it prints:
                                          run each, compare its output line by line
    <!-- walkthrough: output COMMAND -->  the block is what COMMAND prints
    <!-- walkthrough: status -->          lines `$ command`: each must succeed; output not compared

Also checks that every `build/demo/DIR/NAME` path the README names is a
target that scripts/demo.sh builds, since that is the build it documents.

Usage: walk_readme.py [--build DIR] [--keep]
  --build DIR  the build to stand in for build/demo (default: build/demo, as
               ./scripts/demo.sh makes it; ./scripts/test.sh passes its own)
"""

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- walkthrough: (run|python|output|status)(?: (.*?))? -->$")
FENCE = re.compile(r"^\s*```")
# The targets of build/demo's programs, where the file name is not the target's.
TARGET_OF = {"convmat": "convmat_cli"}


def blocks(lines):
    """Yields (line number, kind, argument, block lines) for every marker."""
    for index, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        if index + 1 >= len(lines) or not FENCE.match(lines[index + 1]):
            raise SystemExit(f"README.md:{index + 1}: a walkthrough marker must be followed by a code block")
        end = index + 2
        while end < len(lines) and not FENCE.match(lines[end]):
            end += 1
        indent = len(lines[index + 1]) - len(lines[index + 1].lstrip())
        yield index + 1, marker.group(1), marker.group(2), [l[indent:] for l in lines[index + 2:end]]


def demo_targets():
    text = (ROOT / "scripts" / "demo.sh").read_text()
    builds = re.findall(r'cmake --build "\$build"[^\n]*--target((?:[^\n]*\\\n)*[^\n]*)', text)
    return {target for build in builds for target in build.replace("\\\n", " ").split()}


def check_demo_paths(readme):
    targets, errors = demo_targets(), []
    for path in sorted(set(re.findall(r"build/demo/(?:examples|app|onnx)/([A-Za-z0-9_-]+)(?![/A-Za-z0-9_-])", readme))):
        if TARGET_OF.get(path, path) not in targets:
            errors.append(f"README.md names build/demo/.../{path}, but scripts/demo.sh does not build it")
    for name in re.findall(r"`build/demo/examples/` \(([^)]*)\)", readme):
        for example in re.findall(r"`([A-Za-z0-9_]+)`", name):
            if example not in targets:
                errors.append(f"README.md lists the example {example} in build/demo/examples/, but demo.sh does not build it")
    return errors


def commands_and_outputs(block):
    """[(command, [expected lines])] from lines `$ command` and what follows each."""
    pairs = []
    for line in block:
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        elif pairs:
            pairs[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"output before the first '$ command': {line!r}")
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=str(ROOT / "build" / "demo"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    build = pathlib.Path(args.build).resolve()
    if not build.is_dir():
        raise SystemExit(f"walk_readme: no build in {build}: run ./scripts/demo.sh first")

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    errors = check_demo_paths(readme)

    work = pathlib.Path(tempfile.mkdtemp(prefix="convmat-walkthrough-"))
    for entry in ROOT.iterdir():
        if entry.name not in ("build", ".git"):
            (work / entry.name).symlink_to(entry)
    (work / "build").mkdir()
    (work / "build" / "demo").symlink_to(build)
    home = work / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), PATH=f"{home}/.local/bin:{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)

    def run(command, where, **kw):
        return subprocess.run(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, **kw)

    steps = 0
    for number, kind, argument, block in blocks(readme.split("\n")):
        where = f"README.md:{number}"
        started = time.monotonic()
        if kind in ("run", "python"):
            text = "\n".join(block) + "\n"
            program = ["bash", "-e", "-o", "pipefail", "-c", text] if kind == "run" else ["/usr/bin/python3", "-c", text]
            result = run(program, where)
            ok = result.returncode == 0
            if ok and kind == "python" and argument and argument.startswith("prints "):
                ok = result.stdout.strip() == argument[len("prints "):]
            label = block[0] if block else kind
            if not ok:
                errors.append(f"{where}: {kind} block failed (status {result.returncode}):\n{text}{result.stdout}")
            if kind == "run" and "cmake --install" in text:
                for tool in ("convmat", "convmat-onnx"):
                    if shutil.which(tool, path=env["PATH"]) != str(home / ".local" / "bin" / tool):
                        errors.append(f"{where}: after the install line, {tool} on PATH is "
                                      f"{shutil.which(tool, path=env['PATH'])}, not {home}/.local/bin/{tool}")
            steps += 1
            print(f"{'ok  ' if ok else 'FAIL'} {where:15} {kind:6} {label[:90]}  ({time.monotonic() - started:.1f} s)")
            continue
        if kind == "output" and argument:
            pairs = [(argument, block)]
        else:
            try:
                pairs = commands_and_outputs(block)
            except ValueError as error:
                errors.append(f"{where}: {error}")
                continue
        for command, expected in pairs:
            started = time.monotonic()
            result = run(["bash", "-o", "pipefail", "-c", command], where)
            got = result.stdout.rstrip("\n").split("\n") if result.stdout.strip() else []
            want = expected[:]
            while want and not want[-1].strip():
                want.pop()
            ok = result.returncode == 0 and (kind == "status" or got == want)
            if not ok:
                import difflib
                diff = "\n".join(difflib.unified_diff(want, got, "README.md", "what it prints", lineterm=""))
                errors.append(f"{where}: $ {command}\n(status {result.returncode})\n{diff or result.stdout}")
            steps += 1
            print(f"{'ok  ' if ok else 'FAIL'} {where:15} {kind:6} $ {command[:88]}  ({time.monotonic() - started:.1f} s)")

    if args.keep:
        print(f"walk_readme: scratch directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if errors:
        print("\n" + "\n\n".join(errors), file=sys.stderr)
        print(f"\nwalk_readme: {len(errors)} of the README's steps drifted", file=sys.stderr)
        return 1
    print(f"walk_readme: {steps} steps of README.md hold, from the paths it gives")
    return 0


if __name__ == "__main__":
    sys.exit(main())

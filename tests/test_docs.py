"""The docs name only what exists: paths, links, gpunit names, script flags, config keys and config files.

Read: README.md, docs/*.md and the READMEs of configs/, data/ and checkpoints/. Checked:
- every path under scripts/, configs/, docs/, gpunit/, tests/ or .ci/ exists (globs must match), and every
  bare ``*.yaml`` name is a file under configs/; paths under data/, runs/, outputs/, checkpoints/ and
  $TORCH_HOME are the user's and not checked;
- every relative markdown link (and its ``#anchor``) resolves;
- every ``gpunit.x.y`` name and ``from gpunit.x import y`` exists in the source (read, not imported);
- every ``--flag`` of a ``python scripts/X.py`` command (code blocks and inline code) is one that
  ``scripts/X.py --help`` lists; every ``--set`` key (and ``--stage1-set`` ...) is a key of the script's
  config class; every ``--config`` file loads into it; config keys named in prose exist in some config.
The ``--help`` texts come from running each script with ``--help`` in this process (tests/helpers.py).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from helpers import run_script

from gpunit.biggan.config import BigGANConfig
from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.engine.config import ConfigError, load_config
from gpunit.gp_unit.config import Stage1Config, Stage2Config

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted({REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "configs").rglob("README.md"),
               REPO / "data" / "README.md", REPO / "checkpoints" / "README.md"})
CONFIG_CLASSES = (Stage1Config, Stage2Config, BigGANConfig, DeepI2IConfig)

# Which flags of which script carry config overrides, and the config class they go into.
OVERRIDE_FLAGS = {
    "train_stage1.py": {"--set": Stage1Config},
    "train_stage2.py": {"--set": Stage2Config},
    "train_biggan.py": {"--set": BigGANConfig},
    "train_deepi2i.py": {"--set": DeepI2IConfig},
    "demo.py": {"--stage1-set": Stage1Config, "--stage2-set": Stage2Config, "--biggan-set": BigGANConfig,
                "--deepi2i-set": DeepI2IConfig},
    "benchmark.py": {"--set1": Stage1Config, "--set2": Stage2Config},  # --set: both configs it times (below)
}
# Which flags of which script name a config file, and the class it must load into.
CONFIG_FILE_FLAGS = {
    "train_stage1.py": {"--config": Stage1Config},
    "train_stage2.py": {"--config": Stage2Config},
    "train_biggan.py": {"--config": BigGANConfig},
    "train_deepi2i.py": {"--config": DeepI2IConfig},
    "benchmark.py": {"--stage1": Stage1Config, "--stage2": Stage2Config},
}

PATH = re.compile(r"(?<![\w./$~-])((?:scripts|configs|docs|gpunit|tests|\.ci)/[\w./*-]*)")
BARE_YAML = re.compile(r"(?<![\w./$~<-])([\w-]+\.yaml)\b")
RUN_FILES = {"config.yaml", "other.yaml"}  # a run folder's resolved config; the example of `base:`
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
DOTTED = re.compile(r"(?<![\w./-])(gpunit(?:\.\w+)+)")
IMPORT = re.compile(r"^\s*from\s+(gpunit[\w.]*)\s+import\s+([\w, ]+)", re.MULTILINE)
SCRIPT = re.compile(r"^scripts/(\w+\.py)$")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$|<")
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
FILE_NAME = re.compile(r"\.(pt|pth|py|yaml|json|md|png|jpg|bin|zip|txt)$")  # content_encoder.pt is no config key


# ----------------------------------------------------------------------------- reading the docs
@dataclass
class Doc:
    path: Path
    text: str
    blocks: list[tuple[str, str]]  # (language, code) of every fenced block
    prose: str                     # the text outside fenced blocks
    spans: list[str]               # inline code spans of the prose

    @property
    def name(self) -> str:
        return self.path.relative_to(REPO).as_posix()


@cache
def read(path: Path) -> Doc:
    text = path.read_text(encoding="utf-8")
    blocks, prose, fence = [], [], None
    for line in text.splitlines():
        opening = re.match(r"^(\s*)```\s*([\w+-]*)", line)
        if fence is None and opening:
            fence = (len(opening.group(1)), opening.group(2).lower(), [])
        elif fence is not None and line.strip().startswith("```"):
            blocks.append((fence[1], "\n".join(fence[2])))
            fence = None
        elif fence is not None:
            fence[2].append(line[fence[0]:] if line[:fence[0]].strip() == "" else line)
        else:
            prose.append(line)
    prose_text = "\n".join(prose)
    return Doc(path, text, blocks, prose_text, re.findall(r"`([^`\n]+)`", prose_text))


def docs() -> list[Doc]:
    return [read(p) for p in DOCS]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Doc) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", doc.prose, re.MULTILINE)}


# ----------------------------------------------------------------------------- commands
@dataclass
class Command:
    doc: str
    script: str          # "demo.py"
    args: list[str]      # the tokens after scripts/<script>
    text: str


def _shell_lines(code: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, heredoc bodies dropped, variables expanded."""
    lines, heredoc, current = [], None, ""
    for line in code.splitlines():
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        marker = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if marker:
            heredoc = marker.group(1)
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    variables: dict[str, str] = {}
    out = []
    for line in lines:
        for name, value in variables.items():
            line = re.sub(r"\$\{?" + name + r"\b\}?", lambda _, v=value: v, line)
        out.append(line)
        for segment in _segments(_tokens(line)):
            if segment and all(re.match(r"^[A-Za-z_]\w*=", t) for t in segment):
                for token in segment:
                    name, _, value = token.partition("=")
                    variables[name] = value
    return out


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote: fall back to whitespace
        return line.split()


def _segments(tokens: list[str]) -> list[list[str]]:
    segments, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    return segments + [current]


def _commands_in(line: str, doc: str) -> list[Command]:
    found = []
    for segment in _segments(_tokens(line)):
        for i, token in enumerate(segment):
            match = SCRIPT.match(token)
            if match:
                found.append(Command(doc, match.group(1), segment[i + 1:], line.strip()))
                break
    return found


@cache
def commands() -> list[Command]:
    found = []
    for doc in docs():
        for language, code in doc.blocks:
            if language in SHELL_BLOCKS:
                for line in _shell_lines(code):
                    found += _commands_in(line, doc.name)
        for span in doc.spans:
            if re.search(r"(^|\s)scripts/\w+\.py", span):
                found += _commands_in(span, doc.name)
    return found


def flag_values(args: list[str], flag: str) -> list[str]:
    """The values given after ``flag`` (until the next ``--flag``), over every occurrence."""
    values, taking = [], False
    for token in args:
        if token.startswith("--"):
            taking = token == flag
        elif taking:
            values.append(token)
    return values


@pytest.fixture(scope="module")
def script_flags() -> dict[str, set[str]]:
    """{script name: the flags its --help lists}, each script run with --help in this process."""
    flags = {}
    for script in sorted({c.script for c in commands() if (REPO / "scripts" / c.script).is_file()}):
        done = run_script(f"scripts/{script}", "--help")
        assert done.status == 0 and "usage:" in done.out, f"{script} --help:\n{done.out[-3000:]}\n{done.err[-3000:]}"
        flags[script] = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", done.out))
    return flags


# ----------------------------------------------------------------------------- config keys
def check_override(cls, override: str) -> str | None:
    """None when ``override`` (KEY=VALUE) is valid for ``cls``; else the error."""
    if "=" not in override:
        return f"'{override}' is not KEY=VALUE"
    value = override.partition("=")[2]
    try:
        load_config(None, cls, [override])
    except ConfigError as err:
        if PLACEHOLDER.search(value) and "unknown key" not in str(err):
            return None  # a placeholder such as FOLDER or runs/<name>/biggan.pt: only the key is checked
        return f"{cls.__name__}: {err}"
    return None


@cache
def known_key(key: str) -> bool:
    return any(check_override(cls, f"{key}=X") is None for cls in CONFIG_CLASSES)


# ----------------------------------------------------------------------------- python names
def module_file(dotted: str) -> Path | None:
    path = REPO / Path(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def defines(source: str, name: str) -> bool:
    top = re.compile(rf"^(?:def|class|async def)\s+{name}\b|^{name}\s*[:=]|^(?:from\s+\S+\s+)?import\s+.*\b{name}\b",
                     re.MULTILINE)
    return bool(top.search(source))


def check_dotted(dotted: str) -> str | None:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        file = module_file(".".join(parts[:cut]))
        if file is None:
            continue
        rest = parts[cut:]
        if not rest:
            return None
        source = file.read_text(encoding="utf-8")
        if not defines(source, rest[0]):
            return f"{dotted}: {file.relative_to(REPO)} defines no '{rest[0]}'"
        missing = [name for name in rest[1:] if not re.search(rf"\b{name}\b", source)]
        return f"{dotted}: no '{missing[0]}' in {file.relative_to(REPO)}" if missing else None
    return f"{dotted}: no such module"


# ----------------------------------------------------------------------------- the tests
def test_the_docs_are_found_and_hold_commands():
    names = {d.name for d in docs()}
    assert {"README.md", "docs/gp_unit.md", "docs/deepi2i.md", "docs/architecture.md"} <= names
    assert any(n.startswith("configs/") for n in names)
    assert len(commands()) > 30 and {c.script for c in commands()} >= {"demo.py", "train_stage2.py", "translate.py"}


def test_readme_gives_the_commands_that_ci_runs():
    readme = "\n".join(code for language, code in read(REPO / "README.md").blocks if language in SHELL_BLOCKS)
    for command in ("pip install -e '.[test]'", "python -m pytest -q"):
        assert command in (REPO / ".ci" / "run").read_text()
        assert re.search(rf"^{re.escape(command)}(\s+#.*)?$", readme, re.MULTILINE), f"README lacks `{command}`"


def test_named_paths_exist():
    bad = []
    config_yaml = {p.name for p in (REPO / "configs").rglob("*.yaml")}
    for doc in docs():
        for match in PATH.finditer(doc.text):
            path = match.group(1).rstrip(".,:;")
            if doc.text[match.end():match.end() + 1] in ("<", "$", "{"):
                continue  # a placeholder or variable: configs/<method>/, tests/test_<method>_*.py
            exists = any(REPO.glob(path)) if "*" in path else (REPO / path).exists()
            if not exists:
                bad.append(f"{doc.name}: {path}")
        for name in set(BARE_YAML.findall(doc.text)) - RUN_FILES:
            if name not in config_yaml:
                bad.append(f"{doc.name}: {name} (no such file under configs/)")
    assert not bad, "paths named in the docs that do not exist:\n" + "\n".join(sorted(bad))


def test_links_and_anchors_resolve():
    bad = []
    for doc in docs():
        for target in LINK.findall(doc.prose):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            path = (doc.path.parent / file).resolve() if file else doc.path
            if not path.exists():
                bad.append(f"{doc.name}: link {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(read(path)):
                bad.append(f"{doc.name}: link {target} (no heading '#{anchor}' in {path.relative_to(REPO)})")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_named_gpunit_objects_exist():
    bad = set()
    for doc in docs():
        for dotted in DOTTED.findall(doc.text):
            error = check_dotted(dotted.rstrip("."))
            if error:
                bad.add(f"{doc.name}: {error}")
        for language, code in doc.blocks:
            if language == "python":
                for module, names in IMPORT.findall(code):
                    for name in filter(None, (n.strip() for n in names.split(","))):
                        error = check_dotted(f"{module}.{name}")
                        if error:
                            bad.add(f"{doc.name}: from {module} import {name}: {error}")
    assert not bad, "gpunit names in the docs that do not exist:\n" + "\n".join(sorted(bad))


def test_script_flags_exist(script_flags):
    bad = []
    for c in commands():
        if c.script not in script_flags:
            bad.append(f"{c.doc}: scripts/{c.script} does not exist: {c.text}")
            continue
        for token in c.args:
            flag = token.split("=", 1)[0]
            if flag.startswith("--") and flag not in script_flags[c.script]:
                bad.append(f"{c.doc}: scripts/{c.script} has no {flag}: {c.text}")
    assert not bad, "flags the scripts do not accept:\n" + "\n".join(bad)


def test_config_overrides_and_files_are_valid():
    bad = []
    for c in commands():
        targets = dict(OVERRIDE_FLAGS.get(c.script, {}))
        for flag, cls in targets.items():
            for override in flag_values(c.args, flag):
                error = check_override(cls, override)
                if error:
                    bad.append(f"{c.doc}: {flag} {override}: {error}\n    in: {c.text}")
        if c.script == "benchmark.py":  # --set goes into every config the command times
            for option, cls in (("--stage1", Stage1Config), ("--stage2", Stage2Config)):
                if option in c.args:
                    for override in flag_values(c.args, "--set"):
                        error = check_override(cls, override)
                        if error:
                            bad.append(f"{c.doc}: --set {override}: {error}\n    in: {c.text}")
        for flag, cls in CONFIG_FILE_FLAGS.get(c.script, {}).items():
            for value in flag_values(c.args, flag):
                if "$" in value or "<" in value:
                    continue
                try:
                    load_config(REPO / value, cls)
                except ConfigError as err:
                    bad.append(f"{c.doc}: {flag} {value} does not load as {cls.__name__}: {err}")
    assert not bad, "config overrides and files that do not load:\n" + "\n".join(bad)


def test_config_keys_named_in_prose_exist():
    sections = {f.split(".")[0] for cls in CONFIG_CLASSES for f in cls.__dataclass_fields__}
    key = re.compile(rf"^((?:{'|'.join(sorted(sections))})(?:\.\w+)*)(?::|=.*)?$")
    bad = set()
    for doc in docs():
        for span in doc.spans:
            if re.search(r"(^|\s)scripts/\w+\.py", span):
                continue  # a command: checked with its script's config
            for token in span.split():
                match = key.match(token)
                if not match or "*" in token or FILE_NAME.search(match.group(1)):
                    continue  # not a key, a wildcard (loss.lambda_*), or a file name (content_encoder.pt)
                if ("." in match.group(1) or "=" in token) and not known_key(match.group(1)):
                    bad.add(f"{doc.name}: `{token}` is no config key")
    assert not bad, "config keys in the docs that no config has:\n" + "\n".join(sorted(bad))

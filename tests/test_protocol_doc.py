"""docs/protocol.md must give every text a server can answer a client with, so
that a stranger can write a client that understands every refusal."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where the texts a client can be sent are written: the room's rules, the accounts, the
# chat-text rule, and what the servers themselves answer.
SOURCES = ("common/room.py", "common/accounts.py", "common/messages.py", "common/controls.py",
           "lab1_tcp/server.py", "lab2_udp/server.py")
REPLIES = {"ProtocolError", "LoginRejected", "ErrorNotice", "Goodbye"}
# The codec's own errors (a malformed frame) close the connection and are not replies.
# Nor is a typed line a client refuses itself (docs/lab2.md says it), nor a server's start-up
# error (docs/instructor.md's troubleshooting says it).
CODEC_ONLY = ("cannot open the database", "field '", "message ends",
              "unexpected bytes", "unknown message type", "empty message",
              "unknown room event kind", "is not a protocol message", "must hold RoomEvents", "is no command")
PLACEHOLDER = re.compile(r"\b(NAME|NEWNAME|N|KIND|DETAIL|XXXX)\b")


def skeleton(text: str) -> str:
    """The fixed words of a text, with every variable part (and number) as {}."""
    text = re.sub(r"\d+", "{}", text.replace("({})", "{}"))
    return re.sub(r"(\{\})+", "{}", text)


def texts_in_code() -> set[str]:
    texts = set()
    for path in SOURCES:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        constants = {node.targets[0].id: node.value.value for node in ast.walk(tree)
                     if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
        # A reply built by a helper (not_delivered(name)): the text its return gives.
        returns = {node.name: next((r.value for r in ast.walk(node) if isinstance(r, ast.Return)), None)
                   for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) in REPLIES and node.args):
                continue
            argument = node.args[0]
            if isinstance(argument, ast.Call) and getattr(argument.func, "id", None) in returns:
                argument = returns[argument.func.id]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                texts.add(argument.value)
            elif isinstance(argument, ast.JoinedStr):
                texts.add(skeleton("".join(part.value if isinstance(part, ast.Constant) else "{}"
                                           for part in argument.values)))
            elif isinstance(argument, ast.Name) and argument.id in constants:
                texts.add(constants[argument.id])
    return {text for text in texts if not any(marker in text for marker in CODEC_ONLY)}


def texts_in_doc() -> set[str]:
    rows = [line for line in (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("|")]
    return {skeleton(PLACEHOLDER.sub("{}", text))
            for row in rows for text in re.findall(r"`([^`]+)`", row)}


@pytest.mark.points(1)
def test_the_scan_finds_the_texts_it_should():
    texts = texts_in_code()
    assert "that name is taken" in texts and "your message to {} was not delivered" in texts
    assert len(texts) > 20


@pytest.mark.points(2)
@pytest.mark.parametrize("text", sorted(texts_in_code()))
def test_every_reply_a_server_can_send_is_in_the_protocol_document(text):
    assert skeleton(text) in texts_in_doc(), f"docs/protocol.md does not give the text {text!r}"


@pytest.mark.parametrize("handout", ["instructor.md", "lab2.md"])
def test_a_class_on_one_machine_is_told_the_members_per_address_limit_and_its_setting(handout):
    """Everyone on one machine shares one IP address: where a class is planned, the
    handout names the limit, the refusal the 21st student sees, and the setting to raise."""
    from common.config import _DEFAULTS
    from common.room import Room
    limit = _DEFAULTS["MAX_CLIENTS_PER_ADDRESS"]
    assert int(limit) == Room.__init__.__kwdefaults__["max_members_per_source"]
    paragraphs = re.split(r"\n\s*\n", (ROOT / "docs" / handout).read_text(encoding="utf-8"))
    planning = [p for p in paragraphs if "one machine" in p and "MAX_CLIENTS_PER_ADDRESS" in p]
    assert planning, f"docs/{handout} does not say that a class on one machine meets MAX_CLIENTS_PER_ADDRESS"
    text = " ".join(planning[0].split())
    assert f"({limit})" in text and "too many members from your address; try again later" in text


def test_the_format_characters_chat_text_allows_and_refuses_are_listed_in_the_protocol_document():
    from common import messages
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"U\+([0-9A-F]{4,5})", doc))
    for start, _, end in re.findall(r"U\+([0-9A-F]{4,5})(-U\+([0-9A-F]{4,5}))?", doc):
        if end:
            listed |= {f"{code:04X}" for code in range(int(start, 16), int(end, 16) + 1)}
    named = messages.INVISIBLE_TEXT_FORMAT | messages.VISIBLE_TEXT_FORMAT | messages.BIDI_CONTROLS
    assert {f"{ord(char):04X}" for char in named} <= listed
    assert {f"{ord(messages.BLACK_FLAG):04X}", f"{messages.TAGS.start:04X}", f"{messages.TAGS.stop - 1:04X}"} <= listed
    assert f"at most {messages.MAX_TAG_RUN}" in doc


# --- Every text a lab's test compares is written down for the student ----------------------

LAB_TEST_FILES = ("tests/test_lab1.py", "tests/test_lab2.py", "tests/test_lab2_hostile.py",
                  "tests/test_lab2_attacks.py", "tests/test_lab2_operator.py", "tests/test_quit_paths.py",
                  "tests/test_ui.py")
STUDENT_DOCS = ("docs/lab1.md", "docs/lab2.md", "docs/protocol.md")
# A line of a transcript (its format is in the handouts; its words are what the test typed): "alice: hi",
# "#3 alice: hi", "~#3 ...", "@alice -> bob: hi", "#2 * bob joined", "* bob joined".
TRANSCRIPT_LINE = re.compile(r"^(~?#\d+ |@)?[a-z_]+( -> [a-z_]+)?: |^(#\d+ )?\* ")
# Texts a test makes up itself: an error it raises in a handler, argparse's own words.
MADE_UP_BY_THE_TEST = ("RuntimeError: a bug in a handler", "argument --port: invalid int value")


def fixed_words(pattern: str) -> list[str]:
    """The literal runs of a regular expression (or of a plain text)."""
    for variable in (r"\d+", ".*", ".+", r"\S+", r"\w+"):
        pattern = pattern.replace(variable, "\0")
    pattern = re.sub(r"\([^)]*\)|\[[^\]]*\][*+?]?", "\0", pattern).replace("^", "").replace("$", "")
    return [run.strip(" :") for run in re.sub(r"\\(.)", r"\1", pattern).split("\0")]


def compared_texts(path: str) -> list[tuple[int, str]]:
    """(line, text) of every text of three words or more that a test waits for or compares."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    typed = [node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
             and getattr(node.func, "attr", "") == "send_line" and isinstance(node.args[0], ast.Constant)]
    # Words the test itself puts on the wire (a raw peer's message) appear in it outside a comparison too.
    compared = {id(node.args[0]) for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
                and getattr(node.func, "attr", "") in ("wait_for_stderr", "wait_for_stdout")}
    compared |= {id(part) for node in ast.walk(tree) if isinstance(node, ast.Compare)
                 for part in (node.left, *node.comparators)}
    constants = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                 and isinstance(node.value, str) and id(node) not in compared]
    found = []
    for node in ast.walk(tree):
        texts = []
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("wait_for_stderr", "wait_for_stdout")
                and node.args and isinstance(node.args[0], ast.Constant)):
            texts = fixed_words(node.args[0].value)
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.Eq) and isinstance(
                node.comparators[0], ast.Constant) and isinstance(node.comparators[0].value, str):
            texts = [node.comparators[0].value]
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In) and isinstance(
                node.left, ast.Constant) and isinstance(node.left.value, str):
            texts = [node.left.value]
        for text in texts:
            if (len(text.split()) >= 3 and not TRANSCRIPT_LINE.match(text) and not text.startswith(MADE_UP_BY_THE_TEST)
                    and not any(text in line or line in text for line in typed)
                    and not any(text in constant for constant in constants)):
                found.append((node.lineno, text))
    return found


# The names the tests log in with: a handout's example may use another.
TEST_NAMES = re.compile(r"\b(alice|bob|carol|dave|mallory|ally|host|nobody_here)\b")


def as_example(text: str) -> str:
    return TEST_NAMES.sub("NAME", re.sub(r"\s+", " ", text.replace("`", "")))


@pytest.mark.points(2)
def test_every_text_a_lab_test_compares_is_in_a_handout_or_the_protocol_document():
    docs = as_example(" ".join((ROOT / doc).read_text(encoding="utf-8") for doc in STUDENT_DOCS))
    missing = [f"{path}:{line}: {text!r}" for path in LAB_TEST_FILES for line, text in compared_texts(path)
               if as_example(text) not in docs]
    assert not missing, "texts a test compares that no handout gives:\n" + "\n".join(missing)

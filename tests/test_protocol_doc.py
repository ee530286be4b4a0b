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
SOURCES = ("common/room.py", "common/accounts.py", "common/messages.py",
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

"""The message codec: exact round trips, and a strict reader of bad bytes."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import messages as m
from common.errors import ProtocolError
from common.messages import decode, encode

EVENT = m.RoomEvent(7, "say", "alice", "hello, room")
SAMPLES = [
    m.Register("alice", "correct horse"), m.Login("bob", "battery staple"),
    m.LoginAccepted("alice", "server"), m.LoginRejected("login failed"),
    m.ChatMessage("alice", "héllo ✓"), m.Goodbye("quit"), m.ErrorNotice("slow down"),
    m.PrivateMessage("alice", "bob", "psst"), m.IgnoreUser("carol"), m.UnignoreUser("carol"),
    m.IgnoreList(("carol", "dave")), m.WhoRequest(), m.MemberList(("server", "alice")), m.ChangeName("ally"),
    m.Say("hi all"), EVENT, m.RoomKey(3, bytes(32), bytes(range(32))), m.RepairRequest(41),
    m.History((EVENT, m.RoomEvent(8, "join", "bob", "")), 9), m.RoomBatch((), 12), m.RoomGroup("239.255.76.61"),
    m.HistoryStart(m.RoomEvent(40, "not_kept", "server", ""), bytes(range(32)), ("alice", "ally bob")),
]


@pytest.mark.points(1)
def test_every_message_type_has_a_sample():
    assert {type(sample) for sample in SAMPLES} == set(m.MESSAGE_TYPES.values())


@pytest.mark.points(2)
@pytest.mark.parametrize("message", SAMPLES, ids=lambda msg: type(msg).__name__)
def test_every_message_round_trips_exactly(message):
    assert decode(encode(message)) == message


@pytest.mark.points(1)
def test_unknown_type_is_rejected():
    with pytest.raises(ProtocolError, match="unknown message type 200"):
        decode(bytes([200]))


@pytest.mark.points(1)
@pytest.mark.parametrize("message", SAMPLES, ids=lambda msg: type(msg).__name__)
def test_trailing_bytes_are_rejected(message):
    with pytest.raises(ProtocolError, match="unexpected bytes"):
        decode(encode(message) + b"\x00")


@pytest.mark.points(1)
@pytest.mark.parametrize("message", [s for s in SAMPLES if encode(s)[1:]], ids=lambda msg: type(msg).__name__)
def test_truncated_messages_are_rejected(message):
    wire = encode(message)
    for cut in range(1, len(wire)):
        with pytest.raises(ProtocolError):
            decode(wire[:cut])


@pytest.mark.points(1)
def test_invalid_utf8_is_rejected():
    with pytest.raises(ProtocolError, match="not valid UTF-8"):
        decode(bytes([m.Goodbye.TYPE]) + b"\x00\x02\xff\xfe")


@pytest.mark.points(1)
def test_over_long_text_is_rejected_both_ways():
    with pytest.raises(ProtocolError, match="limit"):
        encode(m.Say("x" * (m.MAX_TEXT_BYTES + 1)))
    with pytest.raises(ProtocolError, match="limit"):
        decode(bytes([m.Say.TYPE]) + (m.MAX_TEXT_BYTES + 1).to_bytes(2, "big") + b"x" * (m.MAX_TEXT_BYTES + 1))


@pytest.mark.points(1)
def test_wrong_field_types_are_rejected_on_encode():
    with pytest.raises(ProtocolError, match="must be text"):
        encode(m.Say(b"bytes, not text"))
    with pytest.raises(ProtocolError, match="whole number"):
        encode(m.RepairRequest(-1))
    with pytest.raises(ProtocolError, match="RoomEvents"):
        encode(m.History(("not an event",), 1))


@pytest.mark.points(1)
def test_room_event_of_unknown_kind_is_rejected():
    wire = encode(m.RoomEvent(1, "say", "alice", "x")).replace(b"say", b"sax")
    with pytest.raises(ProtocolError, match="kind"):
        decode(wire)


@pytest.mark.points(1)
def test_history_cannot_nest_other_messages():
    inner = encode(m.Say("sneaky"))
    wire = bytes([m.History.TYPE]) + (1).to_bytes(2, "big") + len(inner).to_bytes(2, "big") + inner + bytes(8)
    with pytest.raises(ProtocolError, match="RoomEvents"):
        decode(wire)


@pytest.mark.points(1)
@pytest.mark.parametrize("text", ["", "   ", "two\nlines", "bell\x07", "\x1b[2J"])
def test_blank_or_control_text_is_not_chat_text(text):
    with pytest.raises(ProtocolError):
        m.checked_text(text)


@pytest.mark.points(2)
@pytest.mark.parametrize("text", [
    "hi\u202e!dlrow",                              # a right-to-left override
    "x\u2028#999 server: the exam is cancelled",   # a line separator
    "x\u2029y", "zero\u200bwidth", "word\u2060joiner", "bom\ufeff", "\u2066isolate\u2069",
    "e" + "\u0301" * 5,                             # accents stacked over the lines above
    "wrap" + " " * 9 + "#999 server: the exam is cancelled",
    "hi" + "\u2800" * 66 + "#4 server: the exam is cancelled",   # braille blanks
    "hi" + "\u3164\uffa0" * 5 + "#4 server: the exam is cancelled",   # Hangul fillers
    "hi" + ("\u2800" * 8 + "\u034f") * 8 + "#4 server: the exam is cancelled",   # blanks, joined by invisible marks
    "hi" + (" " * 8 + "\ufe0f") * 8 + "#4 server",                 # spaces, and variation selectors
    "private\ue000use", "unassigned\U000e0080",
    "\u202bembedding\u202c", "\u202doverride", "\u2067isolate", "\u2068first strong\u2069",   # bidi controls
    "hidden\U000e0069\U000e0067\U000e006e",       # tag characters outside a flag: invisible letters
    "\U0001f3f4" + "\U000e0061" * 9 + "\U000e007f",    # a "flag" too long to be one
    "a" + "\u0301" * 3 + "\u200d" + "\u0301" * 2,      # marks stacked through a joiner
    "hi" + (" " * 8 + "\u200c") * 3 + "#4 server",   # spaces, joined by invisible non-joiners
])
def test_text_that_could_pose_as_another_line_is_refused(text):
    with pytest.raises(ProtocolError, match="may not"):
        m.checked_text(text)


@pytest.mark.points(1)
@pytest.mark.parametrize("text", ["caf\u00e9", "cafe\u0301", "\u4f60\u597d", "\U0001f600 ok", "a" + " " * 8 + "b"])
def test_ordinary_text_of_any_script_is_chat_text(text):
    assert m.checked_text(text) == text


@pytest.mark.points(2)
@pytest.mark.parametrize("text", [
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",   # Persian "می‌خواهم" (I want): ZWNJ
    "\u0915\u094d\u200d\u0937",                        # Hindi "क्‍ष": the half form, asked for by ZWJ
    "\u0928\u094d\u200c\u0939",                        # Hindi "न्‌ह": no conjunct, by ZWNJ
    "\u0644\u0627\u200d",                              # Arabic, a joining form shown alone
    "\u05e9\u05dc\u05d5\u05dd 2024\u200f!",               # Hebrew, a number placed by an RLM
    "\u0600\u0661\u0662\u0663",                        # the Arabic number sign over its digits
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",          # family: man, woman, girl (ZWJ)
    "\U0001f3f3\ufe0f\u200d\U0001f308",                  # rainbow flag: white flag, VS16, ZWJ, rainbow
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",   # Scotland's flag: tags
    "\U0001f469\U0001f3fd\u200d\U0001f4bb",              # woman technologist, medium skin tone
    "Silben\u00adtrennung",                            # a soft hyphen
])
def test_joiners_and_other_format_characters_real_text_needs_are_chat_text(text):
    assert m.checked_text(text) == text


@pytest.mark.points(1)
@pytest.mark.parametrize("text", ["\u200d", "\u200c \u200f", " \u00ad "])
def test_a_message_of_invisible_joiners_alone_is_blank(text):
    with pytest.raises(ProtocolError, match="empty message"):
        m.checked_text(text)


names = st.text(min_size=0, max_size=30)
messages = st.one_of(
    st.builds(m.Say, st.text(max_size=250)),
    st.builds(m.PrivateMessage, names, names, st.text(max_size=250)),
    st.builds(m.RoomEvent, st.integers(0, 2**64 - 1), st.sampled_from(m.EventKind), names, st.text(max_size=200)),
    st.builds(m.MemberList, st.lists(names, max_size=20).map(tuple)),
    st.builds(m.RoomKey, st.integers(0, 2**64 - 1), st.binary(max_size=64), st.binary(max_size=64)),
)


@pytest.mark.points(2)
@given(messages)
def test_generated_messages_round_trip(message):
    assert decode(encode(message)) == message


@pytest.mark.points(2)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_error(data):
    try:
        decode(data)
    except ProtocolError:
        pass  # the one error the codec may raise: anything else fails the test


@pytest.mark.points(2)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_valid_messages_raise_only_protocol_error(message, data):
    wire = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(wire) - 1))
        wire[position] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(wire))
    except ProtocolError:
        pass  # rejected cleanly; a mutation may also yield another valid message


@pytest.mark.points(1)
def test_protocol_document_lists_every_message_type_with_its_code_and_fields():
    import re
    from dataclasses import fields
    from pathlib import Path
    document = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| *(\d+) \| (\w+) \| ([^|]*)\|", document, flags=re.MULTILINE)
    listed = {int(code): (name, field_text) for code, name, field_text in rows}
    assert {code: name for code, (name, _) in listed.items()} == {
        code: cls.__name__ for code, cls in m.MESSAGE_TYPES.items()}
    for code, cls in m.MESSAGE_TYPES.items():
        documented = re.findall(r"(\w+):", listed[code][1])
        assert documented == [f.name for f in fields(cls)], cls.__name__


@pytest.mark.points(1)
def test_a_typed_line_that_starts_with_a_slash_must_be_a_command():
    with pytest.raises(ProtocolError, match="/mgs is no command"):
        m.typed_text("/mgs bob a secret", ("/msg", "/quit"))
    assert m.typed_text("//shrug", ("/msg",)) == "/shrug"
    assert m.typed_text("hello /msg", ("/msg",)) == "hello /msg"

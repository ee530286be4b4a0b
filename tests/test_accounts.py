"""AccountStore: registration, login, throttling and ignore lists, against real sqlite files."""

import math
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import accounts
from common.accounts import (
    FAILURES_BEFORE_LOCK,
    FIRST_LOCK_SECONDS,
    LOGIN_FAILED,
    MAX_IGNORED_NAMES,
    MAX_LOCK_SECONDS,
    MAX_PASSWORD_BYTES,
    MAX_NEW_ACCOUNTS_PER_ADDRESS,
    MIN_PASSWORD_CHARS,
    NAME_PATTERN,
    NEW_ACCOUNTS_WINDOW_SECONDS,
    STORE_BUSY,
    TOO_MANY_NEW_ACCOUNTS,
    AccountStore,
    Argon2Cost,
    normalise_name,
)
from common.errors import ProtocolError

# Argon2's smallest legal cost (8 KiB, one pass): fast tests, same code path.
CHEAP = Argon2Cost(memory_kib=8, iterations=1, lanes=1)
PASSWORD = "correct horse"


class FakeClock:
    """A clock that moves only when a test says so, so lock times need no sleep()."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    accounts_store = AccountStore(tmp_path / "chat.db", CHEAP, clock=clock)
    yield accounts_store
    accounts_store.close()


def login_fails_with(store, name, password, message):
    with pytest.raises(ProtocolError) as failure:
        store.login(name, password)
    assert str(failure.value) == message


def locked_message(seconds):
    return f"too many failed logins for this name; try again in {seconds} s"


def fail_until_locked(store):
    for _ in range(FAILURES_BEFORE_LOCK):
        login_fails_with(store, "alice", "wrong password", LOGIN_FAILED)


# --- names and passwords -------------------------------------------------------------


@pytest.mark.points(2)
def test_register_then_login_returns_the_normalised_name(store):
    assert store.register("alice", PASSWORD) == "alice"
    assert store.login("alice", PASSWORD) == "alice"


@pytest.mark.points(1)
@pytest.mark.parametrize("raw", [" Alice ", "ALICE", "\uff21\uff4c\uff49\uff43\uff45"])
def test_names_are_normalised_to_one_spelling(raw):
    # The last one is "Alice" in full-width letters: NFKC maps it to plain ASCII.
    assert normalise_name(raw) == "alice"


@pytest.mark.points(1)
@pytest.mark.parametrize(
    "raw", ["", "ab", "a" * 21, "two words", "bob!", "caf\u00e9", "\u0430lice"]
)
def test_malformed_names_are_rejected(raw):
    # "\u0430lice" starts with a Cyrillic "a": it looks like "alice" but is not ASCII.
    with pytest.raises(ProtocolError, match="names are 3-20 characters"):
        normalise_name(raw)


@pytest.mark.points(1)
@given(st.text(max_size=30))
def test_normalising_any_text_gives_a_valid_name_or_a_protocol_error(raw):
    try:
        name = normalise_name(raw)
    except ProtocolError:
        return
    assert NAME_PATTERN.fullmatch(name)
    assert normalise_name(name) == name


@pytest.mark.points(2)
def test_registering_a_taken_name_in_any_spelling_is_refused(store):
    store.register("alice", PASSWORD)
    with pytest.raises(ProtocolError, match="that name is taken"):
        store.register(" ALICE ", "another password")
    assert store.login("alice", PASSWORD) == "alice"  # the first account is untouched


@pytest.mark.points(1)
def test_password_length_limits(store):
    with pytest.raises(ProtocolError, match="at least"):
        store.register("alice", "x" * (MIN_PASSWORD_CHARS - 1))
    # The upper limit counts UTF-8 bytes: each "é" takes two.
    with pytest.raises(ProtocolError, match="at most"):
        store.register("alice", "\u00e9" * (MAX_PASSWORD_BYTES // 2 + 1))
    assert store.register("alice", "x" * MIN_PASSWORD_CHARS) == "alice"
    assert store.register("bob", "x" * MAX_PASSWORD_BYTES) == "bob"


@pytest.mark.points(1)
def test_password_matches_however_its_accents_were_typed(store):
    # "é" as one code point, then as "e" plus a combining accent: NFKC makes them equal.
    store.register("alice", "caf\u00e9 au lait")
    assert store.login("alice", "cafe\u0301 au lait") == "alice"


# --- what is stored ------------------------------------------------------------------


@pytest.mark.points(2)
def test_password_is_stored_only_as_an_argon2id_phc_string(tmp_path):
    path = tmp_path / "chat.db"
    store = AccountStore(path, CHEAP)
    store.register("alice", PASSWORD)
    store.close()  # closing folds the WAL log into the main file, so all data is there
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT * FROM users").fetchall()
    assert len(rows) == 1
    name, phc = rows[0]
    assert name == "alice"
    assert phc.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert PASSWORD.encode() not in path.read_bytes()


@pytest.mark.points(1)
def test_registration_is_committed_at_once(store, tmp_path):
    store.register("alice", PASSWORD)
    # A second connection (another process, say) sees the account while the store is
    # still open: nothing waits in an uncommitted transaction.
    with sqlite3.connect(tmp_path / "chat.db") as conn:
        assert conn.execute("SELECT name FROM users").fetchall() == [("alice",)]


@pytest.mark.points(1)
def test_file_database_uses_write_ahead_logging(store, tmp_path):
    with sqlite3.connect(tmp_path / "chat.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.points(1)
def test_in_memory_store_works_for_quick_experiments():
    store = AccountStore(":memory:", CHEAP)
    store.register("alice", PASSWORD)
    assert store.login("alice", PASSWORD) == "alice"
    store.close()


# --- failed logins -------------------------------------------------------------------


@pytest.mark.points(3)
@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("alice", "wrong password"),  # real account, wrong password
        ("nobody", PASSWORD),  # no such account
        ("no such name!", PASSWORD),  # not even a valid name
        ("alice", "x" * (MAX_PASSWORD_BYTES + 1)),  # longer than any password can be
    ],
)
def test_unknown_name_and_wrong_password_get_the_same_reply(store, name, password):
    store.register("alice", PASSWORD)
    login_fails_with(store, name, password, LOGIN_FAILED)


@pytest.mark.points(3)
def test_unknown_name_is_verified_against_a_dummy_hash_of_the_same_cost(store, monkeypatch):
    verified = []
    real_password_matches = accounts._password_matches

    def spy(secret, phc):
        verified.append(phc)
        return real_password_matches(secret, phc)

    monkeypatch.setattr(accounts, "_password_matches", spy)
    store.register("alice", PASSWORD)
    login_fails_with(store, "alice", "wrong password", LOGIN_FAILED)
    login_fails_with(store, "nobody", PASSWORD, LOGIN_FAILED)
    # Both failures did one verify each, and at the same cost: the timing gives nothing
    # away. (The PHC string is "$argon2id$v=19$m=..,t=..,p=..$salt$hash".)
    real_hash, dummy_hash = verified
    assert dummy_hash.split("$")[:4] == real_hash.split("$")[:4]
    assert dummy_hash != real_hash


@pytest.mark.points(2)
def test_a_guesser_locks_only_its_own_address_out_never_the_owner_elsewhere(store):
    store.register("alice", PASSWORD)
    for _ in range(FAILURES_BEFORE_LOCK):
        with pytest.raises(ProtocolError, match="login failed"):
            store.login("alice", "a wrong guess", "10.0.0.66")
    with pytest.raises(ProtocolError, match="too many failed logins"):
        store.login("alice", PASSWORD, "10.0.0.66")
    assert store.login("alice", PASSWORD, "10.0.0.7") == "alice"


@pytest.mark.points(1)
def test_a_guesser_moving_through_its_ipv6_64_stays_locked_out_and_makes_one_addresss_accounts(store):
    store.register("alice", PASSWORD)
    for i in range(FAILURES_BEFORE_LOCK):   # a new address of its /64 for every guess
        with pytest.raises(ProtocolError, match="login failed"):
            store.login("alice", "a wrong guess", f"2001:db8:1:2::{i + 1:x}")
    with pytest.raises(ProtocolError, match="too many failed logins"):
        store.login("alice", PASSWORD, "2001:db8:1:2::ffff")
    assert store.login("alice", PASSWORD, "2001:db8:1:3::1") == "alice"   # the owner, elsewhere
    for i in range(MAX_NEW_ACCOUNTS_PER_ADDRESS):
        store.register(f"bot{i}", "password1", f"2001:db8:9:9::{i + 1:x}")
    with pytest.raises(ProtocolError, match=f"^{re.escape(TOO_MANY_NEW_ACCOUNTS)}$"):
        store.register("bot_extra", "password1", "2001:db8:9:9:ffff::1")


@pytest.mark.points(3)
def test_account_locks_after_repeated_failures_and_unlocks_after_the_back_off(store, clock):
    store.register("alice", PASSWORD)
    fail_until_locked(store)
    # While the lock lasts, even the right password is refused.
    login_fails_with(store, "alice", PASSWORD, locked_message(math.ceil(FIRST_LOCK_SECONDS)))
    clock.advance(FIRST_LOCK_SECONDS - 0.5)
    login_fails_with(store, "alice", PASSWORD, locked_message(1))  # 0.5 s left, rounded up
    clock.advance(0.5)
    assert store.login("alice", PASSWORD) == "alice"


@pytest.mark.points(2)
def test_lock_doubles_with_each_further_failure_up_to_the_cap(store, clock):
    store.register("alice", PASSWORD)
    fail_until_locked(store)
    expected_seconds = FIRST_LOCK_SECONDS
    for _ in range(8):
        with pytest.raises(ProtocolError) as failure:
            store.login("alice", PASSWORD)
        waited = int(re.search(r"try again in (\d+) s", str(failure.value)).group(1))
        assert waited == expected_seconds
        clock.advance(waited)
        login_fails_with(store, "alice", "wrong password", LOGIN_FAILED)
        expected_seconds = min(expected_seconds * 2, MAX_LOCK_SECONDS)
    assert expected_seconds == MAX_LOCK_SECONDS


@pytest.mark.points(2)
def test_successful_login_resets_the_failure_count(store):
    store.register("alice", PASSWORD)
    for _ in range(FAILURES_BEFORE_LOCK - 1):
        login_fails_with(store, "alice", "wrong password", LOGIN_FAILED)
    store.login("alice", PASSWORD)
    for _ in range(FAILURES_BEFORE_LOCK - 1):
        login_fails_with(store, "alice", "wrong password", LOGIN_FAILED)
    assert store.login("alice", PASSWORD) == "alice"


@pytest.mark.points(1)
def test_a_locked_account_leaves_other_accounts_alone(store):
    store.register("alice", PASSWORD)
    store.register("bob", PASSWORD)
    fail_until_locked(store)
    assert store.login("bob", PASSWORD) == "bob"


@pytest.mark.points(1)
def test_failures_for_unknown_names_are_not_counted(store):
    # Only accounts that exist are tracked, so guessing many names can't fill memory.
    for _ in range(FAILURES_BEFORE_LOCK + 2):
        login_fails_with(store, "nobody", PASSWORD, LOGIN_FAILED)


# --- ignore lists --------------------------------------------------------------------


@pytest.mark.points(2)
def test_ignore_list_survives_reopening_the_database(tmp_path):
    path = tmp_path / "chat.db"
    store = AccountStore(path, CHEAP)
    for name in ("alice", "bob", "carol"):
        store.register(name, PASSWORD)
    store.ignore("alice", "bob")
    store.ignore("alice", " CAROL ")
    store.ignore("alice", "bob")  # twice is the same as once
    store.unignore("alice", "carol")
    store.close()

    reopened = AccountStore(path, CHEAP)
    assert reopened.ignored_by("alice") == frozenset({"bob"})
    assert reopened.ignored_by("bob") == frozenset()
    reopened.close()


@pytest.mark.points(1)
def test_unignoring_someone_not_ignored_changes_nothing(store):
    store.register("alice", PASSWORD)
    store.register("bob", PASSWORD)
    store.unignore("alice", "bob")
    assert store.ignored_by("alice") == frozenset()


@pytest.mark.points(1)
def test_you_cannot_ignore_yourself(store):
    store.register("alice", PASSWORD)
    with pytest.raises(ProtocolError, match="yourself"):
        store.ignore("alice", "Alice")
    assert store.ignored_by("alice") == frozenset()


@pytest.mark.points(2)
def test_ignoring_a_name_without_an_account_answers_as_for_one_with_an_account(store):
    # Different answers would let anyone list the accounts by ignoring names.
    store.register("alice", PASSWORD)
    store.register("bob", PASSWORD)
    store.ignore("alice", "bob")
    store.ignore("alice", "nobody")
    assert store.ignored_by("alice") == frozenset({"bob", "nobody"})


@pytest.mark.points(2)
def test_an_ignore_list_is_capped_and_the_cap_is_said(store):
    store.register("alice", PASSWORD)
    names = [f"n{i:03}_" + "x" * 14 for i in range(MAX_IGNORED_NAMES)]
    for name in names:
        store.ignore("alice", name)
    with pytest.raises(ProtocolError, match=f"at most {MAX_IGNORED_NAMES} names"):
        store.ignore("alice", "one_too_many")
    store.ignore("alice", names[0])             # again: no change, so no refusal
    store.unignore("alice", names[0])
    store.ignore("alice", "one_more_now")
    assert len(store.ignored_by("alice")) == MAX_IGNORED_NAMES


@pytest.mark.points(1)
def test_a_database_with_a_longer_ignore_list_still_gives_at_most_the_cap(tmp_path):
    store = AccountStore(tmp_path / "chat.db", CHEAP)
    store.register("alice", PASSWORD)
    with store._conn:   # rows written by another program, past the cap
        store._conn.executemany("INSERT INTO ignores VALUES ('alice', ?)",
                                [(f"name_{i:04}",) for i in range(750)])
    assert len(store.ignored_by("alice")) == MAX_IGNORED_NAMES


@pytest.mark.points(1)
def test_a_database_that_required_ignored_names_to_exist_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE users (name TEXT PRIMARY KEY, password_phc TEXT NOT NULL);
        CREATE TABLE ignores (user TEXT NOT NULL REFERENCES users (name),
                              target TEXT NOT NULL REFERENCES users (name), PRIMARY KEY (user, target));
        INSERT INTO users VALUES ('alice', 'x'), ('bob', 'x');
        INSERT INTO ignores VALUES ('alice', 'bob');
    """)
    old.close()
    store = AccountStore(path, CHEAP)
    store.ignore("alice", "nobody")
    assert store.ignored_by("alice") == frozenset({"bob", "nobody"})


@pytest.mark.points(1)
def test_registering_an_existing_account_with_its_password_logs_in(store):
    # Lab 1 registered alice; Lab 2's handout starts with --register too.
    assert store.register("alice", PASSWORD) == "alice"
    assert store.register(" Alice ", PASSWORD) == "alice"


# --- threads -------------------------------------------------------------------------


@pytest.mark.points(2)
def test_concurrent_logins_from_several_threads_all_succeed(store):
    names = [f"user{number}" for number in range(8)]
    for name in names:
        store.register(name, PASSWORD)
    start_together = threading.Barrier(len(names))

    def log_in(name):
        start_together.wait(timeout=10)
        return store.login(name, PASSWORD)

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        assert list(pool.map(log_in, names)) == names


@pytest.mark.points(1)
def test_concurrent_registrations_of_one_name_give_exactly_one_account(store):
    attempts = FAILURES_BEFORE_LOCK + 1   # more would see the lockout their failures cause
    start_together = threading.Barrier(attempts)

    def register(attempt):
        start_together.wait(timeout=10)
        try:
            return store.register("alice", f"password number {attempt}")
        except ProtocolError as refusal:
            return str(refusal)

    with ThreadPoolExecutor(max_workers=attempts) as pool:
        outcomes = list(pool.map(register, range(attempts)))
    assert sorted(outcomes) == ["alice"] + ["that name is taken"] * (attempts - 1)



@pytest.mark.points(1)
def test_a_failing_database_is_a_protocol_error_not_a_crash(tmp_path):
    store = AccountStore(tmp_path / "chat.db", CHEAP)
    store.register("alice", "a long password")
    store._conn.close()   # the database goes away under the store's feet
    store._reader.close()
    with pytest.raises(ProtocolError, match="account store failed"):
        store.ignored_by("alice")
    with pytest.raises(ProtocolError, match="account store failed"):
        store.register("bobby", "another long password")


@pytest.mark.points(2)
def test_one_address_makes_only_so_many_new_accounts_an_hour(tmp_path, clock):
    store = AccountStore(tmp_path / "chat.db", CHEAP, clock=clock, wall_clock=clock)
    for i in range(MAX_NEW_ACCOUNTS_PER_ADDRESS):
        store.register(f"bot{i}", "password1", "10.0.0.9")
    with pytest.raises(ProtocolError, match=f"^{re.escape(TOO_MANY_NEW_ACCOUNTS)}$"):
        store.register("bot_extra", "password1", "10.0.0.9")
    assert not store.exists("bot_extra")
    assert store.register("bot0", "password1", "10.0.0.9") == "bot0"   # an existing account still logs in
    assert store.register("alice", "password1", "10.0.0.10") == "alice"   # another address is not held back
    with pytest.raises(ProtocolError, match="^that name is taken$"):   # an existing one, the wrong password
        store.register("bot0", "wrong password", "10.0.0.9")
    # Counted in the database: another server on the same accounts (the other lab's) counts along.
    other_server = AccountStore(tmp_path / "chat.db", CHEAP, clock=clock, wall_clock=clock)
    with pytest.raises(ProtocolError, match=f"^{re.escape(TOO_MANY_NEW_ACCOUNTS)}$"):
        other_server.register("bot_elsewhere", "password1", "10.0.0.9")
    clock.advance(NEW_ACCOUNTS_WINDOW_SECONDS)
    assert store.register("bot_extra", "password1", "10.0.0.9") == "bot_extra"   # an hour on, room again
    other_server.close()
    store.close()


@pytest.mark.points(1)
def test_a_register_of_a_locked_account_says_it_is_locked(store):
    store.register("alice", "right password", "10.0.0.9")
    fail_until_locked(store)
    with pytest.raises(ProtocolError, match="^too many failed logins for this name"):
        store.register("alice", "right password")


@pytest.mark.points(1)
def test_a_write_to_a_database_another_program_locked_gives_up_clearly_and_reads_never_wait(tmp_path):
    store = AccountStore(tmp_path / "chat.db", CHEAP, busy_timeout_seconds=0.05)
    store.register("alice", "a long password")
    store.ignore("alice", "bob")
    locker = sqlite3.connect(tmp_path / "chat.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")   # another program, mid-transaction
    with pytest.raises(ProtocolError, match=f"^{re.escape(STORE_BUSY)}$"):
        store.ignore("alice", "carol")
    # The reads a server makes on its loop do not wait for the lock: WAL lets them through.
    assert store.ignored_by("alice") == frozenset({"bob"}) and store.exists("alice")
    locker.execute("ROLLBACK")
    assert store.ignore("alice", "carol") == frozenset({"bob", "carol"})
    assert store.unignore("alice", "bob") == frozenset({"carol"})
    locker.close()


@pytest.mark.points(1)
@pytest.mark.parametrize("problem", ["missing folder", "not a database"])
def test_a_database_that_cannot_be_opened_is_named_with_the_reason(tmp_path, problem):
    path = tmp_path / "missing" / "chat.db"
    if problem == "not a database":
        path = tmp_path / "notes.txt"
        path.write_bytes(b"not sqlite at all\n" * 100)
    with pytest.raises(ProtocolError, match=f"^cannot open the database {re.escape(str(path))}: ") as refusal:
        AccountStore(path, CHEAP)
    assert ("does not exist" if problem == "missing folder" else "not a database") in str(refusal.value)


@pytest.mark.parametrize("version, warns", [
    ("45.0.7", True), ("49.0.0", True), ("50.0.0", False), ("50.0.0rc1", False), ("51.0.1", False),
])
def test_a_server_on_a_cryptography_that_holds_the_gil_while_hashing_is_warned_once_at_start(
        monkeypatch, version, warns):
    """Releases before 50 hold Python's GIL for a whole Argon2id hash: a server on one
    still runs (clients need them where 50 has no wheel), but says so in one line."""
    monkeypatch.setattr(accounts.cryptography, "__version__", version)
    warning = accounts.slow_hashing_warning()
    if not warns:
        assert warning is None
        return
    assert warning.startswith(f"warning: cryptography {version} holds Python's GIL")
    assert "\n" not in warning
    assert "pip install --upgrade 'cryptography>=50'" in warning

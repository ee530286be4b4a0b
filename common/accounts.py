"""Accounts: names, Argon2id password hashes, ignore lists and login throttling.

The Lab 2 server keeps one AccountStore, backed by a sqlite3 file (DB_PATH in .env).
Registering and logging in are the only slow calls, because a password hash is slow on
purpose: Argon2id at OWASP's minimum cost takes 30-60 ms, which is what makes guessing
stolen hashes expensive. The server runs these two calls in a small worker pool, and
the writes (ignore, unignore) in a thread of their own, since a write may wait for a lock
another program holds; everything else here is one quick indexed query that never waits.
(A server needs cryptography 45 or newer, for Argon2id's PHC strings, and would rather
have 50: older releases hold Python's GIL for the whole hash, so the event loop freezes
for each login even with the hash in another thread. A server below 50 says so once at
start: slow_hashing_warning.)

What this file shows:
- A password is stored only as an Argon2id PHC string ("$argon2id$v=19$m=...,t=...,p=...
  $salt$hash"). The string carries its own cost and salt, so hashes made before a change
  of cost still verify.
- Every failed login gets the same reply. An unknown name is checked against a dummy hash,
  so it costs the same work as a wrong password. Neither the words nor the timing of the
  reply tell a guesser whether a name exists.
- Repeated failures lock an account for a while (a back-off that doubles), which slows a
  password guesser down to a handful of tries a minute.
- One lock guards the sqlite connection that writes, but nobody holds it while hashing.
- Another program may hold the file locked (a second server, a backup, the sqlite3 shell in
  the middle of a transaction). A write then waits at most STORE_BUSY_TIMEOUT_SECONDS and
  gives up with STORE_BUSY; the server runs every write in a thread of its own, so the wait
  never stops the room. The quick reads (exists, ignored_by) have a connection of their own
  that never waits at all: in WAL mode a reader is not blocked by a writer.

Usage:
    store = AccountStore("chat.db")
    name = store.register(" Alice ", "correct horse")   # -> "alice"
    store.login("alice", "correct horse")               # -> "alice"
"""

import math
import os
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cryptography
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from common.admission import address_key
from common.errors import ProtocolError

# cryptography releases the GIL while it hashes from release 50 on. Releases 45 to 49 work
# (clients, which never hash, run on them where 50 has no wheel: 32-bit Windows, Intel
# Macs), but a server on one stalls its room for the length of every hash.
PREFERRED_CRYPTOGRAPHY_MAJOR = 50

# A name, once normalised, must match this pattern completely (use fullmatch). Plain ASCII
# means two names that look the same on screen are always the same name.
NAME_PATTERN = re.compile(r"[a-z0-9_]{3,20}")

# NIST SP 800-63B asks for at least 8 characters in a password the user chooses. The count
# is of characters as the user typed them.
MIN_PASSWORD_CHARS = 8
# The upper limit caps how much text one request can make the server hash. No person types
# a password anywhere near this long.
MAX_PASSWORD_BYTES = 256

LOGIN_FAILED = "login failed: unknown name or wrong password"

# Throttling: after this many failed logins in a row, the account is locked for
# FIRST_LOCK_SECONDS. Every further failure (possible only once a lock has ended) doubles
# the lock, up to MAX_LOCK_SECONDS. A successful login starts the count again.
FAILURES_BEFORE_LOCK = 5
MAX_THROTTLED = 10000   # (account, address) pairs whose failures are remembered
FIRST_LOCK_SECONDS = 2.0
MAX_LOCK_SECONDS = 60.0

# New accounts: every one is a row kept for good, so one address may make only so many an
# hour (by default; the setting MAX_NEW_ACCOUNTS_PER_HOUR); a program registering names in a
# loop cannot fill the server's disk.
MAX_NEW_ACCOUNTS_PER_ADDRESS = 100
NEW_ACCOUNTS_WINDOW_SECONDS = 3600.0
TOO_MANY_NEW_ACCOUNTS = "too many new accounts from your address; try again later"

# An ignore list is sent whole at every login, in one record: the cap keeps it far inside
# one, and bounds the rows one member can add to the database.
MAX_IGNORED_NAMES = 100

# How long a write waits for a lock another program holds before it gives up (sqlite's own
# default is 5 s). The wait happens in a worker thread, never on the server's event loop.
STORE_BUSY_TIMEOUT_SECONDS = 2.0
STORE_BUSY = "the account store is busy: another program holds it locked; try again later"

SALT_BYTES = 16  # random for each hash: two users with one password get different hashes
HASH_BYTES = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name         TEXT PRIMARY KEY,  -- normalised, see normalise_name()
    password_phc TEXT NOT NULL      -- Argon2id PHC string; never the password itself
);
CREATE TABLE IF NOT EXISTS ignores (
    user   TEXT NOT NULL REFERENCES users (name),  -- who ignores ...
    target TEXT NOT NULL,                          -- ... which name (an account or not)
    PRIMARY KEY (user, target)
);
-- The accounts each address made in the last NEW_ACCOUNTS_WINDOW_SECONDS: in the database,
-- so that both labs' servers, and a restarted one, count them together.
CREATE TABLE IF NOT EXISTS new_accounts (
    source TEXT NOT NULL,  -- where the Register came from: an IPv4 address, or an IPv6 /64
    made   REAL NOT NULL   -- when, in seconds since 1970
);
CREATE INDEX IF NOT EXISTS new_accounts_by_source ON new_accounts (source, made);
"""


def normalise_name(raw: str) -> str:
    """Return the one canonical spelling of a user name.

    NFKC turns look-alike characters into plain ones (full-width "Ａｌｉｃｅ" becomes
    "Alice"). Then surrounding spaces go and letters become lower case, so " Alice ",
    "ALICE" and "Ａｌｉｃｅ" are all the account "alice".
    Raises ProtocolError if the result is not 3-20 characters of a-z, 0-9 and _.
    """
    name = unicodedata.normalize("NFKC", raw).strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise ProtocolError("names are 3-20 characters: a-z, 0-9 and _")
    return name


@dataclass(frozen=True)
class Argon2Cost:
    """How expensive one password hash is. The defaults are OWASP's minimum for Argon2id:
    19 MiB of memory, 2 passes over it, 1 lane. Tests pass a much cheaper cost."""

    memory_kib: int = 19456
    iterations: int = 2
    lanes: int = 1


def _password_bytes(password: str) -> bytes:
    """Return the bytes we hash: the password NFKC-normalised, as UTF-8.

    Raises ProtocolError if they are longer than MAX_PASSWORD_BYTES.
    """
    # NIST SP 800-63B asks us to normalise. Two keyboards can send "é" as one code point
    # or as "e" plus an accent, and the password must match either way.
    normalised = unicodedata.normalize("NFKC", password)
    try:
        encoded = normalised.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a str that is not valid text
        raise ProtocolError("passwords must be valid Unicode text") from None
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise ProtocolError(f"passwords are at most {MAX_PASSWORD_BYTES} bytes of UTF-8")
    return encoded


def _hash_password(secret: bytes, cost: Argon2Cost) -> str:
    """Hash secret with a fresh random salt and return the Argon2id PHC string."""
    kdf = Argon2id(
        salt=os.urandom(SALT_BYTES),
        length=HASH_BYTES,
        iterations=cost.iterations,
        lanes=cost.lanes,
        memory_cost=cost.memory_kib,
    )
    return kdf.derive_phc_encoded(secret)


def _password_matches(secret: bytes, phc: str) -> bool:
    """Return whether secret hashes to phc, using the cost and salt written in phc."""
    # verify_phc_encoded compares in constant time: how long it takes doesn't depend on
    # how many leading bytes of the hash match.
    try:
        Argon2id.verify_phc_encoded(secret, phc)
    except InvalidKey:
        return False
    return True


@dataclass
class _FailedLogins:
    """The throttling state of one account."""

    count: int = 0  # failed logins in a row since the last success
    lock_seconds: float = 0.0  # length of the latest lock; 0 until the first one
    locked_until: float = -math.inf  # clock() reading at which the lock ends


def slow_hashing_warning() -> str | None:
    """The one line a server shows at start when the cryptography in use holds Python's
    GIL while it hashes a password (releases before PREFERRED_CRYPTOGRAPHY_MAJOR), else None.
    The version is read as cryptography.__version__ spells it ("49.0.0", "50.0.0rc1")."""
    version = cryptography.__version__
    major = re.match(r"\d+", version)
    if major is None or int(major.group()) >= PREFERRED_CRYPTOGRAPHY_MAJOR:
        return None
    return (f"warning: cryptography {version} holds Python's GIL while it hashes a password, so every "
            f"login stalls the room for the hash's 30-60 ms; on a server for a class, install "
            f"cryptography {PREFERRED_CRYPTOGRAPHY_MAJOR} or newer "
            f"(pip install --upgrade 'cryptography>={PREFERRED_CRYPTOGRAPHY_MAJOR}')")


class AccountStore:
    """Users, their password hashes and ignore lists in sqlite3, plus login throttling.

    Several threads may call one store at once: the server's event loop asks quick
    questions while workers register and log users in.
    """

    @classmethod
    def from_settings(cls, settings) -> "AccountStore":
        """The store a server's settings (common/config.py) name: its file, and the cost of its hashes."""
        return cls(settings.db_path, Argon2Cost(settings.argon2_memory_kib, settings.argon2_iterations),
                   max_new_accounts_per_address=settings.max_new_accounts_per_hour)

    def __init__(
        self,
        path: str | os.PathLike,
        cost: Argon2Cost = Argon2Cost(),
        *,
        max_new_accounts_per_address: int = MAX_NEW_ACCOUNTS_PER_ADDRESS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        busy_timeout_seconds: float = STORE_BUSY_TIMEOUT_SECONDS,
    ) -> None:
        """Open (or create) the database at path; ":memory:" keeps it in RAM only.

        cost sets the price of new hashes. clock measures lock times in seconds; tests
        pass a fake clock so they need not sleep. busy_timeout_seconds is how long a write
        waits for another program's lock. Raises ProtocolError, naming the file and the
        reason, if the database cannot be opened (a missing folder, a file that is not a
        database), and ValueError if cost is below Argon2's minimum. The dummy hash below
        is made here, so a bad cost fails at start-up rather than at the first login.
        """
        self._cost = cost
        self._clock = clock
        self._lock = threading.Lock()
        # Throttling state is kept in memory, not in the database. The readings of a
        # monotonic clock mean nothing to another process. The state also only has to
        # last one guessing session, not a server restart. A restart forgets it, which
        # gives a guesser five more tries, but only the instructor can restart the server.
        # Failures are counted per account *and* source address: a guesser locks only
        # itself out, never the owner logging in from another machine. We count only
        # names that have an account, and keep at most MAX_THROTTLED entries.
        self._failures: dict[tuple[str, str], _FailedLogins] = {}
        self.max_new_accounts_per_address = max_new_accounts_per_address
        self._wall_clock = wall_clock   # new accounts are counted across processes: real time
        # sqlite3 normally refuses a connection used from a thread other than the one
        # that made it. Logins run in worker threads, so we switch that check off. In
        # its place self._lock lets one thread at a time use the connection.
        try:
            self._conn = sqlite3.connect(path, timeout=busy_timeout_seconds, check_same_thread=False)
            # In WAL mode a commit is appended to a log file; readers (the instructor's sqlite3
            # shell, say) never block the writer, nor a writer them. In any journal mode each
            # commit is atomic, so a crash mid-write loses nothing committed. A ":memory:"
            # database keeps its own mode and ignores this.
            self._conn.execute("PRAGMA journal_mode=WAL")
            # sqlite checks REFERENCES only if each connection asks it to.
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            self._upgrade_ignores_table()
            # The reads the event loop makes (a DM's ignore check, a rename's "is that name an
            # account?") use a connection that never waits (timeout 0): should a read ever
            # find the file busy, it fails at once rather than freeze the room. It has its own
            # lock, so it never waits for a worker's write either. A ":memory:" database is
            # private to its one connection, and nobody else can lock it: that one serves both.
            self._reader, self._read_lock = self._conn, self._lock
            if str(path) != ":memory:":
                self._reader = sqlite3.connect(path, timeout=0, check_same_thread=False)
                self._read_lock = threading.Lock()
        except sqlite3.Error as error:
            raise ProtocolError(f"cannot open the database {path}: {_why_not_opened(path, error)}") from None
        # A hash of random bytes nobody knows, made at this store's cost. An unknown name
        # is checked against it, so the check takes as long as for a real account.
        self._dummy_phc = _hash_password(os.urandom(SALT_BYTES), cost)

    def register(self, name: str, password: str, source: str = "") -> str:
        """Create an account and return its normalised name.

        Registering a name that already has an account, with that account's
        password, just logs in: a student who registered in Lab 1 can follow
        Lab 2's first command as written. With another password it fails as
        "that name is taken", and counts as a failed login (see login()).
        Raises ProtocolError if the name is malformed or taken, if the password is
        shorter than MIN_PASSWORD_CHARS or longer than MAX_PASSWORD_BYTES, or if
        ``source`` made max_new_accounts_per_address accounts within the last
        NEW_ACCOUNTS_WINDOW_SECONDS. ``source`` counts by its address_key: an
        IPv6 address as its /64.
        """
        user, source = normalise_name(name), address_key(source)
        if len(password) < MIN_PASSWORD_CHARS:
            raise ProtocolError(f"passwords need at least {MIN_PASSWORD_CHARS} characters")
        with self._locked():   # checked before the slow hash, so a refusal costs nothing
            at_limit = self._new_accounts_of(source) >= self.max_new_accounts_per_address
        if at_limit:
            if self.exists(user):
                return self._log_in_instead(user, password, source)   # not a new account
            raise ProtocolError(TOO_MANY_NEW_ACCOUNTS)
        # Hash before taking the lock: hashing is the slow part, and no other call should
        # wait on the lock for it.
        phc = _hash_password(_password_bytes(password), self._cost)
        # We don't ask "is the name taken?" first. Another worker could register the same
        # name between that question and our INSERT. The PRIMARY KEY lets the database
        # decide, in one step.
        try:
            with self._locked(transaction=True):  # one transaction: committed whole, or not at all
                # Again, under the lock: two workers may have passed the check above at once.
                if self._new_accounts_of(source) >= self.max_new_accounts_per_address:
                    raise ProtocolError(TOO_MANY_NEW_ACCOUNTS)
                self._conn.execute(
                    "INSERT INTO users (name, password_phc) VALUES (?, ?)", (user, phc)
                )
                now = self._wall_clock()
                self._conn.execute("DELETE FROM new_accounts WHERE made <= ?", (now - NEW_ACCOUNTS_WINDOW_SECONDS,))
                self._conn.execute("INSERT INTO new_accounts (source, made) VALUES (?, ?)", (source, now))
        except sqlite3.IntegrityError:
            return self._log_in_instead(user, password, source)
        return user

    def _log_in_instead(self, user: str, password: str, source: str) -> str:
        """A Register of an existing account: a login, throttled like any. A wrong
        password says the name is taken; a lockout says so."""
        try:
            return self.login(user, password, source)
        except ProtocolError as error:
            if str(error) == LOGIN_FAILED:
                raise ProtocolError("that name is taken") from None
            raise

    def login(self, name: str, password: str, source: str = "") -> str:
        """Check a name and password; return the normalised name.

        Raises ProtocolError(LOGIN_FAILED) for every kind of failure (a malformed or
        unknown name, a wrong or oversize password), so the reply never says which part
        was wrong. While the account is locked for ``source`` (the client's address)
        after repeated failures from it, it raises ProtocolError("too many failed logins
        for this name; try again in N s") instead, even for the right password.
        """
        source = address_key(source)   # an IPv6 guesser gets one lockout for its whole /64
        try:
            user = normalise_name(name)
            secret = _password_bytes(password)
        except ProtocolError:
            # No account can have such a name or password, and the rules for both are
            # public, so failing fast here tells a guesser nothing new.
            raise ProtocolError(LOGIN_FAILED) from None
        with self._locked():
            self._refuse_if_locked((user, source))
            row = self._conn.execute(
                "SELECT password_phc FROM users WHERE name = ?", (user,)
            ).fetchone()
        # The slow verify runs outside the lock too. A side effect: several guesses at one
        # name, in different workers, can all pass the lock check before the first of them
        # is counted, so a guesser gets at most one extra try per worker. We accept that
        # small leak to keep the hash outside the lock.
        matched = _password_matches(secret, self._dummy_phc if row is None else row[0])
        if row is None:
            raise ProtocolError(LOGIN_FAILED)  # no account, so no failures to count
        with self._lock:
            if not matched:
                self._count_failure((user, source))
                raise ProtocolError(LOGIN_FAILED)
            self._failures.pop((user, source), None)
        return user

    def _refuse_if_locked(self, user: tuple[str, str]) -> None:
        """Raise ProtocolError if (user, source) is locked out. The caller holds self._lock."""
        # The lock message does show that the name exists. So does registration's "that
        # name is taken", and a sign-up form can't avoid saying that.
        failures = self._failures.get(user)
        if failures is None:
            return
        remaining_seconds = failures.locked_until - self._clock()
        if remaining_seconds > 0:
            raise ProtocolError(
                "too many failed logins for this name; "
                f"try again in {math.ceil(remaining_seconds)} s"
            )

    def _count_failure(self, user: tuple[str, str]) -> None:
        """Record one failed login; lock (user, source) if it is one too many."""
        if user not in self._failures and len(self._failures) >= MAX_THROTTLED:
            del self._failures[next(iter(self._failures))]   # the oldest: bounded memory
        failures = self._failures.setdefault(user, _FailedLogins())
        failures.count += 1
        if failures.count < FAILURES_BEFORE_LOCK:
            return
        if failures.lock_seconds == 0:
            failures.lock_seconds = FIRST_LOCK_SECONDS
        else:
            failures.lock_seconds = min(failures.lock_seconds * 2, MAX_LOCK_SECONDS)
        failures.locked_until = self._clock() + failures.lock_seconds

    def ignore(self, user: str, target: str) -> frozenset[str]:
        """Record, permanently, that user ignores target; return whom user ignores now.
        Ignoring twice changes nothing.

        Any well-formed name may be ignored, whether or not it has an account: an
        answer that differed would tell anyone which accounts exist.
        Raises ProtocolError if a name is malformed, target is user, or user already
        ignores MAX_IGNORED_NAMES names, or STORE_BUSY if another program held the
        database locked for STORE_BUSY_TIMEOUT_SECONDS: a write may wait that long, so
        a server calls this off its event loop.
        """
        user, target = normalise_name(user), normalise_name(target)
        if target == user:
            raise ProtocolError("you cannot ignore yourself")
        with self._locked(transaction=True):
            count, already = self._conn.execute(
                "SELECT COUNT(*), SUM(target = ?) FROM ignores WHERE user = ?", (target, user)
            ).fetchone()
            if count >= MAX_IGNORED_NAMES and not already:
                raise ProtocolError(
                    f"you can ignore at most {MAX_IGNORED_NAMES} names: unignore someone first"
                )
            self._conn.execute(
                "INSERT OR IGNORE INTO ignores (user, target) VALUES (?, ?)", (user, target)
            )
            return self._ignored_by(self._conn, user)

    def unignore(self, user: str, target: str) -> frozenset[str]:
        """Stop user ignoring target; return whom user ignores now. If target wasn't
        ignored, nothing changes.

        Raises ProtocolError if a name is malformed, or STORE_BUSY as ignore() does.
        """
        user, target = normalise_name(user), normalise_name(target)
        with self._locked(transaction=True):
            self._conn.execute(
                "DELETE FROM ignores WHERE user = ? AND target = ?", (user, target)
            )
            return self._ignored_by(self._conn, user)

    def ignored_by(self, user: str) -> frozenset[str]:
        """Return the names that user ignores: at most MAX_IGNORED_NAMES, the first in
        alphabetical order, even if a database from elsewhere holds more. Never waits
        for a lock (see __init__).
        Raises ProtocolError for a malformed name, or if the database cannot be read."""
        user = normalise_name(user)
        with self._locked(reading=True):
            return self._ignored_by(self._reader, user)

    @staticmethod
    def _ignored_by(conn: sqlite3.Connection, user: str) -> frozenset[str]:
        rows = conn.execute("SELECT target FROM ignores WHERE user = ? ORDER BY target LIMIT ?",
                            (user, MAX_IGNORED_NAMES)).fetchall()
        return frozenset(target for (target,) in rows)

    def _new_accounts_of(self, source: str) -> int:
        """How many accounts ``source`` made in the last window. The lock must be held."""
        since = self._wall_clock() - NEW_ACCOUNTS_WINDOW_SECONDS
        return self._conn.execute("SELECT COUNT(*) FROM new_accounts WHERE source = ? AND made > ?",
                                  (source, since)).fetchone()[0]

    def exists(self, name: str) -> bool:
        """Return whether ``name`` (already normalised) has an account. Never waits for a lock."""
        with self._locked(reading=True):
            return self._reader.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None

    def _upgrade_ignores_table(self) -> None:
        """Databases made before any name could be ignored required the target to
        have an account. Copy their rows into a table without that rule."""
        if not self._conn.execute("PRAGMA foreign_key_list(ignores)").fetchall()[1:]:
            return   # one reference (user), not two: already the current table
        with self._conn:
            self._conn.executescript("""
                ALTER TABLE ignores RENAME TO old_ignores;
                CREATE TABLE ignores (user TEXT NOT NULL REFERENCES users (name),
                                      target TEXT NOT NULL, PRIMARY KEY (user, target));
                INSERT INTO ignores SELECT user, target FROM old_ignores;
                DROP TABLE old_ignores;
            """)

    def close(self) -> None:
        """Close the database. The store must not be used afterwards."""
        with self._read_lock:
            self._reader.close()   # ":memory:": the one connection, closed twice, which is harmless
        with self._lock:
            self._conn.close()

    @contextmanager
    def _locked(self, *, transaction: bool = False, reading: bool = False) -> Iterator[None]:
        """Hold the lock of the writing connection (or, ``reading``, the reader's) and,
        if asked, one transaction, for a few queries.

        A failing database (a full disk, a file another program locked) is
        turned into a ProtocolError: the server then refuses this one request
        instead of stopping for everyone.
        """
        with self._read_lock if reading else self._lock:
            try:
                if transaction:
                    with self._conn:   # commits on success, rolls back on an exception
                        yield
                else:
                    yield
            except sqlite3.IntegrityError:
                raise   # a broken constraint means something to the caller ("name taken")
            except sqlite3.Error as error:
                if str(error).startswith("database is locked"):   # sqlite's SQLITE_BUSY: the timeout ran out
                    raise ProtocolError(STORE_BUSY) from None
                raise ProtocolError(f"the account store failed ({error}); try again later") from None


def _why_not_opened(path: str | os.PathLike, error: sqlite3.Error) -> str:
    """Why sqlite could not open ``path``, in words that point at the fix."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    return str(error)
